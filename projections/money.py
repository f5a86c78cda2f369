"""Exact money helpers for the read models.

Money is ``Decimal`` in the domain, a canonical decimal string in documents
(MongoDB, HTTP) and an integer number of 1e-4 units in Redis aggregates, where
counters are 64-bit integers. Nothing here ever goes through a float.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)

UNITS_PER_ONE = 10_000
"""Redis aggregates count money in integer 1e-4 units."""

_UNIT_EXPONENT = -4
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _check_finite(d: Decimal) -> None:
    if not isinstance(d, Decimal):
        raise TypeError(f"money must be a Decimal, not {type(d).__name__}")
    if not d.is_finite():
        raise ValueError(f"money must be finite, got {d}")


def format_money(d: Decimal) -> str:
    """The canonical string of an amount: exact, no exponent, at least two
    fraction digits, trailing zeros beyond two stripped.

    ``9.9900`` -> ``"9.99"``, ``10`` -> ``"10.00"``, ``1.2345`` -> ``"1.2345"``,
    ``-0`` -> ``"0.00"``.
    """
    _check_finite(d)
    return _formatted(d)


@functools.lru_cache(maxsize=1 << 14)
def _formatted(d: Decimal) -> str:
    """``format_money`` of a finite amount, kept for the most recent ones: a view formats
    every price and amount of its order each time it is derived, and an amount's string
    depends on its value alone (equal Decimals hash alike and format alike)."""
    if d.is_zero():
        return "0.00"
    text = format(d, "f")  # exact positional notation, no context rounding
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{whole}.{fraction}"


def to_units(d: Decimal) -> int:
    """``d`` as an integer number of 1e-4 units, exactly.

    Raises ValueError when ``d`` has more than four fraction digits (after
    stripping trailing zeros) or does not fit a signed 64-bit integer (the
    range of Redis counters and BSON integers).
    """
    _check_finite(d)
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)  # finite
    magnitude = int("".join(map(str, digits)) or "0")
    shift = exponent - _UNIT_EXPONENT
    if shift >= 0:
        units = magnitude * 10**shift
    else:
        units, remainder = divmod(magnitude, 10**-shift)
        if remainder:
            raise ValueError(f"{d} is not a whole number of 1e-4 units")
    if sign:
        units = -units
    if not _INT64_MIN <= units <= _INT64_MAX:
        raise ValueError(f"{d} does not fit a 64-bit count of 1e-4 units")
    return units


def from_units(units: int) -> Decimal:
    """The exact amount of ``units`` 1e-4 units (exponent -4, e.g. ``Decimal("9.9900")``)."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError(f"units must be an int, not {type(units).__name__}")
    sign, digits, _ = Decimal(units).as_tuple()
    return Decimal((sign, digits, _UNIT_EXPONENT))


_EXACT = Context(prec=1_000, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])


def exact_arithmetic() -> AbstractContextManager[Context]:
    """A decimal context in which sums and products of money are exact or raise
    (``Inexact``) instead of silently rounding to the default 28 digits. Each use
    works on a copy of one context made once (``localcontext`` copies it), as a view
    is derived in one per order and change."""
    return localcontext(_EXACT)


@functools.lru_cache(maxsize=1 << 14)
def text_units(text: str) -> int:
    """``to_units`` of an amount written as a decimal string (``format_money``'s, in a
    view or a summary), kept for the most recent ones: the same prices and amounts
    recur across orders, and each order's rows read its ledger's amounts again."""
    return to_units(Decimal(text))
