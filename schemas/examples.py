"""One valid JSON envelope per event type.

Shared by the tests, API docs (OpenAPI examples) and demo traffic, so that an
example can never drift from the models: the tests parse every one of them.
"""

from __future__ import annotations

from typing import Any

_AT = "2024-05-01T12:00:00Z"

EXAMPLES: dict[str, dict[str, Any]] = {
    "OrderPlaced": {
        "type": "OrderPlaced",
        "event_id": "6f1c2b7e-8a4d-4c1e-9f0a-1b2c3d4e5f60",
        "occurred_at": _AT,
        "data": {
            "order_id": "o-1",
            "customer_id": "c-1",
            "currency": "EUR",
            "items": [
                {"sku": "A-1", "quantity": 2, "unit_price": "9.99"},
                {"sku": "B-7", "quantity": 1, "unit_price": "120.5"},
            ],
            "channel": "web",
        },
    },
    "OrderCancelled": {
        "type": "OrderCancelled",
        "event_id": "0d9e4b1a-3c2f-4e5d-8a7b-6c5d4e3f2a10",
        "occurred_at": _AT,
        "data": {"order_id": "o-1", "reason": "customer changed their mind"},
    },
    "OrderShipped": {
        "type": "OrderShipped",
        "event_id": "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d",
        "occurred_at": _AT,
        "data": {"order_id": "o-1", "carrier": "DHL", "tracking_number": "JD0146000031"},
    },
    "OrderDelivered": {
        "type": "OrderDelivered",
        "event_id": "2b3c4d5e-6f7a-4b9c-8d1e-2f3a4b5c6d7e",
        "occurred_at": _AT,
        "data": {"order_id": "o-1"},
    },
    "PaymentAuthorized": {
        "type": "PaymentAuthorized",
        "event_id": "3c4d5e6f-7a8b-4c0d-9e2f-3a4b5c6d7e8f",
        "occurred_at": _AT,
        "data": {
            "payment_id": "p-1",
            "order_id": "o-1",
            "amount": "140.48",
            "currency": "EUR",
            "method": "card",
        },
    },
    "PaymentCaptured": {
        "type": "PaymentCaptured",
        "event_id": "4d5e6f7a-8b9c-4d1e-8f3a-4b5c6d7e8f90",
        "occurred_at": _AT,
        "data": {"payment_id": "p-1", "order_id": "o-1", "amount": "140.48", "currency": "EUR"},
    },
    "PaymentFailed": {
        "type": "PaymentFailed",
        "event_id": "5e6f7a8b-9c0d-4e2f-9a4b-5c6d7e8f9a01",
        "occurred_at": _AT,
        "data": {"payment_id": "p-2", "order_id": "o-1", "reason": "card declined"},
    },
    "PaymentRefunded": {
        "type": "PaymentRefunded",
        "event_id": "6f7a8b9c-0d1e-4f3a-8b5c-6d7e8f9a0b12",
        "occurred_at": _AT,
        "data": {"payment_id": "p-1", "order_id": "o-1", "amount": "20", "currency": "EUR"},
    },
    "CustomerRegistered": {
        "type": "CustomerRegistered",
        "event_id": "7a8b9c0d-1e2f-4a4b-9c6d-7e8f9a0b1c23",
        "occurred_at": _AT,
        "data": {
            "customer_id": "c-1",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "tier": "standard",
            "country": "GB",
        },
    },
    "CustomerUpdated": {
        "type": "CustomerUpdated",
        "event_id": "8b9c0d1e-2f3a-4b5c-8d7e-8f9a0b1c2d34",
        "occurred_at": _AT,
        "data": {
            "customer_id": "c-1",
            "name": "Ada King",
            "email": "ada.king@example.com",
            "tier": "gold",
            "country": "GB",
        },
    },
}
