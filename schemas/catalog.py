"""Where each event type lives on Kafka.

One table, shared by the producers (which topic to publish to, which key to
partition by) and the processors (which topics to subscribe to). Payments are
keyed by order_id so they are co-partitioned with ``orders``: one worker owns
every event of an order.
"""

from __future__ import annotations

TOPICS: tuple[str, ...] = ("orders", "payments", "customers")
# The order-customer join's table side: the profiles every order of a customer shows.
TABLE_SIDE = "customers"

# The processors' own repartition topics (JSON, not events): the join's two halves
# talk through them. ``order-links`` is keyed by customer_id, co-partitioned with
# ``customers``; ``order-enrichment`` by order_id, co-partitioned with ``orders``.
ORDER_LINKS = "order-links"
ORDER_ENRICHMENT = "order-enrichment"
INTERNAL_TOPICS: tuple[str, ...] = (ORDER_LINKS, ORDER_ENRICHMENT)
# What they carry between the join's two projections, (from, to) -> topic: each order's
# contribution to its customer's totals, and the customer fields its orders look up.
CARRIES: dict[tuple[str, str], str] = {
    ("orders", "customers"): ORDER_LINKS,
    ("customers", "orders"): ORDER_ENRICHMENT,
}
# The processors' keyed state (Faust tables, each backed by a compacted changelog topic
# ``<app id>-<table>-changelog``): ``order-state`` per order_id, ``customer-state`` per
# customer_id, partitioned like the topics their agent consumes.
ORDER_STATE = "order-state"
CUSTOMER_STATE = "customer-state"
STATE_TABLES: tuple[str, ...] = (ORDER_STATE, CUSTOMER_STATE)
# Topics whose records the processors may dead-letter (each has ``<topic>.dlq``).
DEAD_LETTER_SOURCES: tuple[str, ...] = TOPICS + INTERNAL_TOPICS

TOPIC_OF_TYPE: dict[str, str] = {
    "OrderPlaced": "orders",
    "OrderCancelled": "orders",
    "OrderShipped": "orders",
    "OrderDelivered": "orders",
    "PaymentAuthorized": "payments",
    "PaymentCaptured": "payments",
    "PaymentFailed": "payments",
    "PaymentRefunded": "payments",
    "CustomerRegistered": "customers",
    "CustomerUpdated": "customers",
}

# The data field whose value is the Kafka message key of a topic's events.
KEY_FIELD_OF_TOPIC: dict[str, str] = {
    "orders": "order_id",
    "payments": "order_id",
    "customers": "customer_id",
}

DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """Name of the dead-letter topic of ``topic`` (``orders`` -> ``orders.dlq``)."""
    return topic + DLQ_SUFFIX
