"""Validation contract of the event models (what the producer API accepts)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from schemas.catalog import DLQ_SUFFIX, KEY_FIELD_OF_TOPIC, TOPIC_OF_TYPE, TOPICS, dlq_topic
from schemas.events import (
    EVENT_TYPES,
    CustomerData,
    Event,
    EventBase,
    OrderCancelled,
    OrderDelivered,
    OrderDeliveredData,
    OrderItem,
    OrderPlaced,
    PaymentCaptured,
    event_to_json,
    parse_event,
    parse_events,
)
from schemas.examples import EXAMPLES

E = TypeVar("E", bound=EventBase)


def example(type_name: str, **data: Any) -> dict[str, Any]:
    """A deep copy of the example envelope with some data fields replaced."""
    envelope = copy.deepcopy(EXAMPLES[type_name])
    envelope["data"].update(data)
    return envelope


def parse_as(cls: type[E], obj: object) -> E:
    event = parse_event(obj)
    assert isinstance(event, cls)
    return event


def errors_of(obj: object) -> list[ErrorDetails]:
    with pytest.raises(ValidationError) as info:
        parse_events(obj)
    return info.value.errors()


def messages(obj: object) -> str:
    return " | ".join(f"{e['loc']}: {e['msg']}" for e in errors_of(obj))


def order_with_price(price: object) -> dict[str, Any]:
    envelope = example("OrderPlaced")
    envelope["data"]["items"][0]["unit_price"] = price
    return envelope


# --- catalog and the set of types -------------------------------------------


def test_every_type_has_a_model_and_a_topic() -> None:
    assert set(EVENT_TYPES) == set(TOPIC_OF_TYPE) == set(EXAMPLES)
    assert set(TOPIC_OF_TYPE.values()) == set(TOPICS) == set(KEY_FIELD_OF_TOPIC)
    assert all(issubclass(cls, EventBase) for cls in EVENT_TYPES.values())


def test_dlq_topic_name() -> None:
    assert DLQ_SUFFIX == ".dlq"
    assert dlq_topic("orders") == "orders.dlq"


@pytest.mark.parametrize("type_name", sorted(EXAMPLES))
def test_every_example_parses_and_round_trips_through_json(type_name: str) -> None:
    event = parse_event(EXAMPLES[type_name])
    assert type(event) is EVENT_TYPES[type_name]
    as_json = event_to_json(event)
    assert json.loads(json.dumps(as_json)) == as_json  # JSON-safe
    assert parse_event(as_json) == event
    assert as_json["event_id"] == EXAMPLES[type_name]["event_id"]
    assert as_json["occurred_at"] == "2024-05-01T12:00:00Z"


@pytest.mark.parametrize(
    ("type_name", "topic", "key"),
    [
        ("OrderPlaced", "orders", "o-1"),
        ("OrderDelivered", "orders", "o-1"),
        ("PaymentCaptured", "payments", "o-1"),  # co-partitioned with orders
        ("PaymentFailed", "payments", "o-1"),
        ("CustomerRegistered", "customers", "c-1"),
        ("CustomerUpdated", "customers", "c-1"),
    ],
)
def test_topic_and_key(type_name: str, topic: str, key: str) -> None:
    event = parse_event(EXAMPLES[type_name])
    assert (event.topic, event.key) == (topic, key)


def test_customer_events_share_the_data_model() -> None:
    registered = parse_event(EXAMPLES["CustomerRegistered"])
    updated = parse_event(EXAMPLES["CustomerUpdated"])
    assert type(registered.data) is type(updated.data) is CustomerData


# --- envelope -----------------------------------------------------------------


def test_event_id_and_occurred_at_are_generated_when_absent() -> None:
    envelope = example("OrderDelivered")
    del envelope["event_id"], envelope["occurred_at"]
    before = datetime.now(UTC)
    first, second = parse_events([envelope, envelope])
    assert uuid.UUID(first.event_id).version == 4
    assert first.event_id != second.event_id
    assert first.occurred_at.tzinfo is not None
    assert before <= first.occurred_at <= datetime.now(UTC)


@pytest.mark.parametrize(
    "spelling",
    [
        "6F1C2B7E-8A4D-4C1E-9F0A-1B2C3D4E5F60",
        "6f1c2b7e8a4d4c1e9f0a1b2c3d4e5f60",
        uuid.UUID("6f1c2b7e-8a4d-4c1e-9f0a-1b2c3d4e5f60"),
    ],
)
def test_event_id_is_normalised_to_canonical_lowercase(spelling: object) -> None:
    event = parse_event({**EXAMPLES["OrderDelivered"], "event_id": spelling})
    assert event.event_id == "6f1c2b7e-8a4d-4c1e-9f0a-1b2c3d4e5f60"


@pytest.mark.parametrize("bad", ["not-a-uuid", "", 42, None])
def test_event_id_must_be_a_uuid(bad: object) -> None:
    errors = errors_of({**EXAMPLES["OrderDelivered"], "event_id": bad})
    assert [e["loc"] for e in errors] == [("OrderDelivered", "event_id")]
    assert "UUID" in errors[0]["msg"]


def test_occurred_at_is_normalised_to_utc() -> None:
    event = parse_event({**EXAMPLES["OrderDelivered"], "occurred_at": "2024-05-01T14:00:00+02:00"})
    assert event.occurred_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event_to_json(event)["occurred_at"] == "2024-05-01T12:00:00Z"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("2024-05-01T12:00:00", "UTC offset"),  # naive
        (datetime(2024, 5, 1, 12), "UTC offset"),  # naive, from Python
        (1714564800, "RFC 3339"),  # Unix time: pydantic would accept it
        (1714564800.5, "RFC 3339"),
        ("yesterday", "datetime"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
    ],
)
def test_occurred_at_must_be_rfc3339_with_offset(value: object, needle: str) -> None:
    errors = errors_of({**EXAMPLES["OrderDelivered"], "occurred_at": value})
    assert [e["loc"] for e in errors] == [("OrderDelivered", "occurred_at")]
    assert needle in errors[0]["msg"]


def test_unknown_type_lists_the_known_types() -> None:
    errors = errors_of({**EXAMPLES["OrderDelivered"], "type": "OrderTeleported"})
    assert errors[0]["type"] == "union_tag_invalid"
    assert "OrderTeleported" in errors[0]["msg"]
    for known in EVENT_TYPES:
        assert repr(known) in errors[0]["msg"]


def test_missing_type_is_refused() -> None:
    envelope = example("OrderDelivered")
    del envelope["type"]
    assert errors_of(envelope)[0]["type"] == "union_tag_not_found"


def test_unknown_fields_are_refused_in_envelope_and_data() -> None:
    errors = errors_of({**example("OrderDelivered", note="x"), "extra": 1})
    assert {e["loc"] for e in errors} == {
        ("OrderDelivered", "extra"),
        ("OrderDelivered", "data", "note"),
    }
    assert {e["type"] for e in errors} == {"extra_forbidden"}


def test_missing_fields_are_reported_with_their_location() -> None:
    envelope = example("PaymentAuthorized")
    del envelope["data"]["amount"], envelope["data"]["method"]
    errors = errors_of(envelope)
    assert {e["loc"] for e in errors} == {
        ("PaymentAuthorized", "data", "amount"),
        ("PaymentAuthorized", "data", "method"),
    }
    assert {e["type"] for e in errors} == {"missing"}


@pytest.mark.parametrize(
    ("field", "value"),
    [("order_id", 123), ("order_id", None), ("carrier", ["DHL"]), ("tracking_number", {})],
)
def test_wrong_types_are_refused(field: str, value: object) -> None:
    errors = errors_of(example("OrderShipped", **{field: value}))
    assert [e["loc"] for e in errors] == [("OrderShipped", "data", field)]


def test_models_are_immutable() -> None:
    event = parse_as(OrderPlaced, EXAMPLES["OrderPlaced"])
    with pytest.raises(ValidationError):
        event.event_id = str(uuid.uuid4())  # type: ignore[misc]
    with pytest.raises(ValidationError):
        event.data.items[0].quantity = 3  # type: ignore[misc]


def test_models_can_be_built_in_python() -> None:
    event = OrderDelivered(data=OrderDeliveredData(order_id="o-9"))
    assert event.type == "OrderDelivered"
    assert event.key == "o-9"
    assert parse_event(event_to_json(event)) == event


# --- identifiers and text -----------------------------------------------------


def test_identifiers_are_stripped() -> None:
    event = parse_event(example("OrderDelivered", order_id="  o-1 "))
    assert event.key == "o-1"


@pytest.mark.parametrize("bad", ["", "   ", "x" * 129, "o\x00-1", "o-\n1", "o\u00851"])
def test_identifiers_must_be_non_empty_short_single_line(bad: str) -> None:
    errors = errors_of(example("OrderDelivered", order_id=bad))
    assert [e["loc"] for e in errors] == [("OrderDelivered", "data", "order_id")]


def test_identifier_of_128_chars_is_accepted() -> None:
    assert parse_event(example("OrderDelivered", order_id="x" * 128)).key == "x" * 128


def test_order_cancelled_reason_is_optional() -> None:
    envelope = example("OrderCancelled")
    del envelope["data"]["reason"]
    assert parse_as(OrderCancelled, envelope).data.reason is None


# --- order items ----------------------------------------------------------------


@pytest.mark.parametrize("quantity", [0, -1, "2", 2.0, True, 2**31])
def test_quantity_must_be_a_positive_json_integer(quantity: object) -> None:
    envelope = example("OrderPlaced")
    envelope["data"]["items"][1]["quantity"] = quantity
    errors = errors_of(envelope)
    assert [e["loc"] for e in errors] == [("OrderPlaced", "data", "items", 1, "quantity")]


def test_an_order_needs_at_least_one_item() -> None:
    errors = errors_of(example("OrderPlaced", items=[]))
    assert [(e["loc"], e["type"]) for e in errors] == [
        (("OrderPlaced", "data", "items"), "too_short")
    ]


def test_order_placed_channel_defaults_to_none() -> None:
    envelope = example("OrderPlaced")
    del envelope["data"]["channel"]
    assert parse_as(OrderPlaced, envelope).data.channel is None


# --- money ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected", "as_json"),
    [
        ("9.99", Decimal("9.99"), "9.99"),
        ("10", Decimal("10"), "10"),
        ("9.90", Decimal("9.9"), "9.9"),  # canonical: trailing zeros stripped
        ("10.0000", Decimal("10"), "10"),
        ("0", Decimal("0"), "0"),
        ("0.0001", Decimal("0.0001"), "0.0001"),
        ("999999999999.9999", Decimal("999999999999.9999"), "999999999999.9999"),
        (Decimal("1.2300"), Decimal("1.23"), "1.23"),
        (Decimal("1E+2"), Decimal("100"), "100"),
    ],
)
def test_money_accepts_exact_decimals(given: object, expected: Decimal, as_json: str) -> None:
    event = parse_as(OrderPlaced, order_with_price(given))
    price = event.data.items[0].unit_price
    assert price == expected
    assert str(price) == as_json
    assert event_to_json(event)["data"]["items"][0]["unit_price"] == as_json


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        (9.99, "decimal string"),  # a JSON number: floats are inexact
        (10, "decimal string"),
        ("9.99999", "fraction digits"),
        ("-1", "negative"),
        ("-0.01", "negative"),
        ("1e3", "decimal string"),
        ("NaN", "decimal string"),
        ("Infinity", "decimal string"),
        (Decimal("NaN"), "finite"),
        (Decimal("-Infinity"), "finite"),
        ("", "decimal string"),
        ("9,99", "decimal string"),
        (".5", "decimal string"),
        ("10000000000000000", "integer digits"),
        ("1000000000000", "below 10^12"),  # the read models' bound (MONEY_INT_DIGITS)
        (None, "decimal string"),
    ],
)
def test_money_refuses_inexact_or_invalid_values(given: object, needle: str) -> None:
    errors = errors_of(order_with_price(given))
    assert [e["loc"] for e in errors] == [("OrderPlaced", "data", "items", 0, "unit_price")]
    assert needle in errors[0]["msg"]


def test_money_refuses_json_numbers_when_parsing_raw_json() -> None:
    """The FastAPI body path validates JSON text, not dicts: same rule."""
    raw = json.dumps(order_with_price("9.99")).replace('"9.99"', "9.99")
    with pytest.raises(ValidationError, match="decimal string"):
        TypeAdapter(Event).validate_json(raw)


@pytest.mark.parametrize("type_name", ["PaymentAuthorized", "PaymentCaptured", "PaymentRefunded"])
def test_payment_amounts_must_be_positive(type_name: str) -> None:
    errors = errors_of(example(type_name, amount="0"))
    assert [e["loc"] for e in errors] == [(type_name, "data", "amount")]
    assert "greater than 0" in errors[0]["msg"]
    event = parse_event(example(type_name, amount="0.01"))
    assert event_to_json(event)["data"]["amount"] == "0.01"


def test_free_items_are_allowed() -> None:
    item = OrderItem(sku="gift", quantity=1, unit_price=Decimal("0"))
    assert item.unit_price == 0


def test_money_json_schema_is_a_string() -> None:
    schema = TypeAdapter(OrderItem).json_schema()
    assert schema["properties"]["unit_price"]["type"] == "string"


# --- currency, country, email -----------------------------------------------------


@pytest.mark.parametrize("code", ["EUR", "USD", "JPY", "KWD", "XOF"])
def test_known_currencies_are_accepted(code: str) -> None:
    assert (
        parse_as(PaymentCaptured, example("PaymentCaptured", currency=code)).data.currency == code
    )


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("eur", "upper case: use 'EUR'"),
        ("EURO", "not an ISO 4217"),
        ("ZZZ", "not an ISO 4217"),
        ("XXX", "not a payable currency"),
        ("XAU", "not a payable currency"),
        ("", "not an ISO 4217"),
    ],
)
def test_currency_must_be_a_payable_iso4217_code(code: str, needle: str) -> None:
    errors = errors_of(example("PaymentCaptured", currency=code))
    assert [e["loc"] for e in errors] == [("PaymentCaptured", "data", "currency")]
    assert needle in errors[0]["msg"]


@pytest.mark.parametrize(("code", "needle"), [("de", "use 'DE'"), ("XX", "ISO 3166"), ("DEU", "")])
def test_country_must_be_iso3166_alpha2(code: str, needle: str) -> None:
    errors = errors_of(example("CustomerRegistered", country=code))
    assert [e["loc"] for e in errors] == [("CustomerRegistered", "data", "country")]
    assert needle in errors[0]["msg"]


@pytest.mark.parametrize("email", ["ada", "ada@", "@example.com", "ada@example", "a b@example.com"])
def test_email_must_look_like_an_address(email: str) -> None:
    errors = errors_of(example("CustomerUpdated", email=email))
    assert [e["loc"] for e in errors] == [("CustomerUpdated", "data", "email")]


def test_tier_must_not_be_empty() -> None:
    errors = errors_of(example("CustomerUpdated", tier=" "))
    assert [e["loc"] for e in errors] == [("CustomerUpdated", "data", "tier")]


# --- batches ----------------------------------------------------------------------


def test_single_envelope_gives_a_list_of_one() -> None:
    assert [e.type for e in parse_events(EXAMPLES["OrderPlaced"])] == ["OrderPlaced"]


def test_batch_preserves_order() -> None:
    batch = [EXAMPLES[name] for name in EXAMPLES]
    assert [e.type for e in parse_events(batch)] == list(EXAMPLES)


def test_batch_is_all_or_nothing_and_errors_start_with_the_index() -> None:
    bad_price = order_with_price(9.99)
    batch = [EXAMPLES["OrderDelivered"], bad_price, EXAMPLES["OrderShipped"], {"type": "Nope"}]
    errors = errors_of(batch)
    assert [e["loc"][0] for e in errors] == [1, 3]
    assert errors[0]["loc"] == (1, "OrderPlaced", "data", "items", 0, "unit_price")


def test_empty_batch_is_refused() -> None:
    assert errors_of([])[0]["type"] == "too_short"


def test_non_object_is_refused() -> None:
    assert errors_of("OrderPlaced")[0]["type"] == "model_attributes_type"


def test_order_placed_type_is_exported() -> None:
    assert EVENT_TYPES["OrderPlaced"] is OrderPlaced
