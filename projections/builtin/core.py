"""The order and customer read models, as definitions (``projections.api.Projection``).

They are the two sides of the order-customer join: an order shows its customer's
name, tier and country (``lookup``), and a customer totals its orders (``totals``).
Their states are typed (``projections.joins``): an order keeps its events as decoded
facts with the offset of each, so that the join's hot path never decodes them again.
The processor's join runs them; the projection engine of the registered projections
runs a typed state too (``engine.TypedEntityState``), but no lookup or totals yet.

The ``redis`` read model (the orders' hot cache, counts by status, revenue, the
top customers) is not a definition of its own: it is derived from ``orders``
(``read_models.CORE``).
"""

from __future__ import annotations

from projections.api import Projection
from projections.customer_fold import CUSTOMER_DOCUMENTS, CUSTOMER_EVENT_TYPES, CUSTOMER_TOTALS
from projections.joins import CUSTOMER_STATES, ORDER_STATES
from projections.order_fold import (
    CUSTOMER_LOOKUP,
    ORDER_DOCUMENTS,
    ORDER_EVENT_TYPES,
    PAYMENT_EVENT_TYPES,
)

orders = Projection(
    name="orders",
    consumes=tuple(t.__name__ for t in (*ORDER_EVENT_TYPES, *PAYMENT_EVENT_TYPES)),
    states=ORDER_STATES,
    lookup=CUSTOMER_LOOKUP,
    documents=ORDER_DOCUMENTS,
    description="order views (MongoDB), written by the processor's join",
)
customers = Projection(
    name="customers",
    consumes=tuple(t.__name__ for t in CUSTOMER_EVENT_TYPES),
    states=CUSTOMER_STATES,
    totals=CUSTOMER_TOTALS,
    documents=CUSTOMER_DOCUMENTS,
    description="customer views (MongoDB), written by the processor's join",
)
JOINED: tuple[Projection, ...] = (orders, customers)
"""The definitions the processor's join runs, each other's lookup and totals."""
