"""Pydantic models of every event: the write side's validation contract.

The producer API validates with these before anything reaches Kafka, and the
codec rebuilds them after decoding, so a consumer sees exactly what a
producer was allowed to send. Models are frozen (events are facts) and forbid
unknown fields (a typo must not be silently dropped from an immutable log).
The ``.avsc`` files under ``schemas/avro`` must agree with the data models;
``schemas.compatibility.check_models_match_schemas`` proves it in the tests.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Union, cast

import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
)

from schemas.catalog import KEY_FIELD_OF_TOPIC, TOPIC_OF_TYPE

# --- scalar types -----------------------------------------------------------

# Money fits Avro decimal(20, 4): 4 fraction digits cover 0/2/3-decimal
# currencies (and 4-decimal unit prices).
MONEY_SCALE = 4
MONEY_PRECISION = 20
MONEY_INT_DIGITS = 12
"""An amount is below 10**12 (a trillion). The read models count money in 64-bit
integers of 1e-4 units (Redis counters, ``projections.money``), whose bound is about
9.2e14; below 1e12 an amount always fits, and so does a sum of 922 of the
largest payments. The wire format (decimal(20, 4)) has room for 16 integer digits: a
record beyond this bound is refused by the producer API (422) and undecodable for the
processors, a rebuild and ``eventfold verify`` alike, so none of them stops on it."""
_MONEY_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_MONEY_HINT = 'send money as a decimal string such as "9.99"'


def _canonical_money(value: Decimal) -> Decimal:
    """Check range and scale; strip trailing zeros so equal amounts compare and print equal."""
    if not value.is_finite():
        raise ValueError(f"money must be a finite number; {_MONEY_HINT}")
    if value.is_signed() and value != 0:
        raise ValueError("money must not be negative")
    if value == 0:
        return Decimal(0)
    value = value.normalize()
    exponent = cast(int, value.as_tuple().exponent)
    if exponent < -MONEY_SCALE:
        raise ValueError(f"money has more than {MONEY_SCALE} fraction digits")
    if exponent > 0:
        value = value.quantize(Decimal(1))
    if value.adjusted() >= MONEY_INT_DIGITS:
        raise ValueError(
            f"money must be below 10^{MONEY_INT_DIGITS} (at most {MONEY_INT_DIGITS} integer "
            "digits): the read models count it in 64-bit integers of 1e-4 units"
        )
    return value


def _parse_money(value: object) -> Decimal:
    """Accept only exact inputs: a Decimal, or a plain decimal string (no floats, no exponents)."""
    if isinstance(value, Decimal):
        return _canonical_money(value)
    if isinstance(value, str):
        text = value.strip()
        if not _MONEY_RE.fullmatch(text):
            raise ValueError(f"{value!r} is not a plain decimal number; {_MONEY_HINT}")
        return _canonical_money(Decimal(text))
    if isinstance(value, bool | int | float):
        raise ValueError(f"money must be exact: {_MONEY_HINT}, not a JSON number")
    raise ValueError(f"money must be a string; {_MONEY_HINT}")


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("amount must be greater than 0")
    return value


Money = Annotated[
    Decimal,
    PlainValidator(_parse_money),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": rf"^[0-9]{{1,{MONEY_INT_DIGITS}}}(\.[0-9]{{1,{MONEY_SCALE}}})?$",
            "examples": ["9.99"],
        }
    ),
]
"""Exact non-negative amount below 10^12, at most 4 fraction digits; a string in JSON."""

PositiveMoney = Annotated[Money, AfterValidator(_positive)]

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_control_chars(value: str) -> str:
    if _CONTROL_RE.search(value):
        raise ValueError("must not contain control characters")
    return value


def _stripped(max_length: int) -> Any:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length)


Identifier = Annotated[str, _stripped(128), AfterValidator(_no_control_chars)]
"""order_id, customer_id, payment_id, sku: non-empty, <= 128 chars, single line."""

ShortText = Annotated[str, _stripped(256), AfterValidator(_no_control_chars)]
Reason = Annotated[str, _stripped(2000)]

_CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)
# ISO 4217 codes that are not money one can pay with: metals, bond-market and
# accounting units, the testing code and "no currency".
_NOT_PAYABLE = frozenset("XAD XAG XAU XBA XBB XBC XBD XDR XPD XPT XSU XTS XUA XXX".split())
_COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)


def _currency(value: str) -> str:
    if value in _CURRENCIES and value not in _NOT_PAYABLE:
        return value
    if value.upper() in _CURRENCIES and value.upper() not in _NOT_PAYABLE:
        raise ValueError(f"currency must be upper case: use {value.upper()!r}")
    if value in _NOT_PAYABLE:
        raise ValueError(f"{value!r} is an ISO 4217 code but not a payable currency")
    raise ValueError(f"{value!r} is not an ISO 4217 currency code (e.g. 'EUR', 'USD')")


def _country(value: str) -> str:
    if value in _COUNTRIES:
        return value
    if value.upper() in _COUNTRIES:
        raise ValueError(f"country must be upper case: use {value.upper()!r}")
    raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (e.g. 'DE')")


Currency = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_currency)]
Country = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_country)]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$"
    ),
]


CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""An event id as ``str(uuid.UUID(...))`` spells it: lowercase, hyphenated."""


def _event_id(value: object) -> str:
    """Canonical lowercase hyphenated UUID: the idempotency key must have one spelling.
    One already in that spelling (every decoded record's) is taken as it is."""
    if isinstance(value, str) and CANONICAL_UUID.fullmatch(value):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise ValueError("event_id must be a UUID string")
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise ValueError(f"event_id {value!r} is not a UUID") from None


def _rfc3339_only(value: object) -> object:
    """Refuse numbers: pydantic would read them as Unix times, the contract says RFC 3339."""
    if isinstance(value, str | datetime):
        return value
    raise ValueError("occurred_at must be an RFC 3339 date-time string with a UTC offset")


def _to_utc(value: datetime) -> datetime:
    """Avro keeps UTC micros only; normalise now so a decoded event equals the original."""
    if value.tzinfo is UTC:  # decoded records' (and most others')
        return value
    if value.utcoffset() is None:
        raise ValueError("occurred_at must have a UTC offset, e.g. 2024-05-01T12:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("occurred_at is out of range") from None


EventId = Annotated[
    str, PlainValidator(_event_id), WithJsonSchema({"type": "string", "format": "uuid"})
]
OccurredAt = Annotated[datetime, BeforeValidator(_rfc3339_only), AfterValidator(_to_utc)]


def _new_event_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


# --- data models ------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrderItem(_Frozen):
    sku: Identifier
    quantity: Annotated[int, Field(strict=True, gt=0, le=2**31 - 1)]  # Avro int
    unit_price: Money


class OrderPlacedData(_Frozen):
    order_id: Identifier
    customer_id: Identifier
    currency: Currency
    items: Annotated[list[OrderItem], Field(min_length=1)]
    channel: ShortText | None = None  # since OrderPlaced v2


class OrderCancelledData(_Frozen):
    order_id: Identifier
    reason: Reason | None = None


class OrderShippedData(_Frozen):
    order_id: Identifier
    carrier: ShortText
    tracking_number: ShortText


class OrderDeliveredData(_Frozen):
    order_id: Identifier


class PaymentAuthorizedData(_Frozen):
    payment_id: Identifier
    order_id: Identifier
    amount: PositiveMoney
    currency: Currency
    method: ShortText


class PaymentCapturedData(_Frozen):
    payment_id: Identifier
    order_id: Identifier
    amount: PositiveMoney
    currency: Currency


class PaymentFailedData(_Frozen):
    payment_id: Identifier
    order_id: Identifier
    reason: Reason


class PaymentRefundedData(_Frozen):
    payment_id: Identifier
    order_id: Identifier
    amount: PositiveMoney
    currency: Currency


class CustomerData(_Frozen):
    customer_id: Identifier
    name: ShortText
    email: Email
    tier: Annotated[str, _stripped(64), AfterValidator(_no_control_chars)]
    country: Country


# --- envelopes --------------------------------------------------------------


class EventBase(_Frozen):
    """Fields and routing shared by every envelope; subclasses pin ``type`` and ``data``."""

    type: str
    event_id: EventId = Field(default_factory=_new_event_id)
    occurred_at: OccurredAt = Field(default_factory=_now)
    data: BaseModel

    @property
    def topic(self) -> str:
        return TOPIC_OF_TYPE[self.type]

    @property
    def key(self) -> str:
        """Kafka partition key: order_id for orders and payments, customer_id for customers."""
        return cast(str, getattr(self.data, KEY_FIELD_OF_TOPIC[self.topic]))


class OrderPlaced(EventBase):
    type: Literal["OrderPlaced"] = "OrderPlaced"
    data: OrderPlacedData


class OrderCancelled(EventBase):
    type: Literal["OrderCancelled"] = "OrderCancelled"
    data: OrderCancelledData


class OrderShipped(EventBase):
    type: Literal["OrderShipped"] = "OrderShipped"
    data: OrderShippedData


class OrderDelivered(EventBase):
    type: Literal["OrderDelivered"] = "OrderDelivered"
    data: OrderDeliveredData


class PaymentAuthorized(EventBase):
    type: Literal["PaymentAuthorized"] = "PaymentAuthorized"
    data: PaymentAuthorizedData


class PaymentCaptured(EventBase):
    type: Literal["PaymentCaptured"] = "PaymentCaptured"
    data: PaymentCapturedData


class PaymentFailed(EventBase):
    type: Literal["PaymentFailed"] = "PaymentFailed"
    data: PaymentFailedData


class PaymentRefunded(EventBase):
    type: Literal["PaymentRefunded"] = "PaymentRefunded"
    data: PaymentRefundedData


class CustomerRegistered(EventBase):
    type: Literal["CustomerRegistered"] = "CustomerRegistered"
    data: CustomerData


class CustomerUpdated(EventBase):
    type: Literal["CustomerUpdated"] = "CustomerUpdated"
    data: CustomerData


Event = Annotated[
    Union[  # noqa: UP007 - a discriminated union reads best spelled out
        OrderPlaced,
        OrderCancelled,
        OrderShipped,
        OrderDelivered,
        PaymentAuthorized,
        PaymentCaptured,
        PaymentFailed,
        PaymentRefunded,
        CustomerRegistered,
        CustomerUpdated,
    ],
    Field(discriminator="type"),
]

EVENT_TYPES: dict[str, type[EventBase]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        OrderPlaced,
        OrderCancelled,
        OrderShipped,
        OrderDelivered,
        PaymentAuthorized,
        PaymentCaptured,
        PaymentFailed,
        PaymentRefunded,
        CustomerRegistered,
        CustomerUpdated,
    )
}

_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
_BATCH: TypeAdapter[list[Event]] = TypeAdapter(
    Annotated[list[Event], Field(min_length=1)]  # type: ignore[arg-type]
)


def parse_event(obj: object) -> Event:
    """Validate one envelope (a dict as decoded from JSON); raises pydantic ValidationError."""
    return _EVENT.validate_python(obj)


def parse_events(obj: object) -> list[Event]:
    """Validate one envelope or a non-empty list of them, all or nothing.

    For a list, every error's ``loc`` starts with the item's index.
    """
    if isinstance(obj, list):
        return _BATCH.validate_python(obj)
    return [parse_event(obj)]


def event_to_json(event: EventBase) -> dict[str, Any]:
    """JSON-safe dict: money as decimal strings, occurred_at as an RFC 3339 UTC string."""
    return event.model_dump(mode="json")
