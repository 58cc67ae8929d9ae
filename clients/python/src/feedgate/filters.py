"""Filter builders: Python expressions that build the protocol's `Filter` message.

    from feedgate import col, path, key, header

    open_orders = (col("status") == "open") & col("account").one_of([1, 2]) & (col("amount") > 10)
    await client.subscribe_table("orders", filter=open_orders)

    oil = (path("commodity") == "oil") & (path("regions") == "north_sea")   # any item of a list
    await client.subscribe_topic("prices", filter=oil | (key() == "k1"))

An operand (`col` for tables; `path`, `key`, `header` for topics) compared with `==`, `!=`,
`<`, `<=`, `>`, `>=`, or with `.one_of(values)`, `.is_null()`, `.is_not_null()`,
`.startswith(prefix)`, gives a `Filter`; filters combine with `&` (all of), `|` (any of) and `~`
(not: two-valued, so `~(col("x") == 1)` holds where x is NULL). Values: bool, int, float,
`decimal.Decimal` (exact numeric), str, `datetime.datetime` (aware: timestamptz; naive:
timestamp), `datetime.date`. None is refused: test for NULL with `.is_null()`. The server checks
the rest (columns exist, values fit their kind) and answers VALIDATION naming the part at fault.
What the server does with a filter: docs/changefeeds.md#filters and docs/brokers.md#filters.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable
from typing import Any

from .v1 import feedgate_pb2 as pb

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_LOCAL_EPOCH = dt.datetime(1970, 1, 1)


class Filter:
    """A predicate; `message` is the protocol's `Filter`. Combine with `&`, `|` and `~`."""

    def __init__(self, message: pb.Filter) -> None:
        self.message = message

    def __and__(self, other: Filter) -> Filter:
        return all_of(self, other)

    def __or__(self, other: Filter) -> Filter:
        return any_of(self, other)

    def __invert__(self) -> Filter:
        return Filter(pb.Filter(negate=self.message))

    def __bool__(self) -> bool:
        raise TypeError("a Filter has no truth value: combine filters with &, | and ~")

    def __repr__(self) -> str:
        return f"Filter({self.message})"


def all_of(*filters: Filter) -> Filter:
    """Holds when every one of `filters` does (none: always)."""
    return Filter(pb.Filter(all_of=pb.Filters(items=[f.message for f in filters])))


def any_of(*filters: Filter) -> Filter:
    """Holds when at least one of `filters` does (none: never)."""
    return Filter(pb.Filter(any_of=pb.Filters(items=[f.message for f in filters])))


class Operand:
    """What a comparison reads; build one with `col`, `path`, `key` or `header`."""

    def __init__(self, operand: pb.Operand) -> None:
        self._operand = operand

    def _compare(self, op: int, value: Any) -> Filter:
        comparison = pb.Comparison(operand=self._operand, op=op, value=to_value(value))
        return Filter(pb.Filter(compare=comparison))

    def __eq__(self, value: Any) -> Filter:  # type: ignore[override]
        return self._compare(pb.COMPARE_OP_EQ, value)

    def __ne__(self, value: Any) -> Filter:  # type: ignore[override]
        return self._compare(pb.COMPARE_OP_NE, value)

    def __lt__(self, value: Any) -> Filter:
        return self._compare(pb.COMPARE_OP_LT, value)

    def __le__(self, value: Any) -> Filter:
        return self._compare(pb.COMPARE_OP_LE, value)

    def __gt__(self, value: Any) -> Filter:
        return self._compare(pb.COMPARE_OP_GT, value)

    def __ge__(self, value: Any) -> Filter:
        return self._compare(pb.COMPARE_OP_GE, value)

    __hash__ = None  # type: ignore[assignment]

    def one_of(self, values: Iterable[Any]) -> Filter:
        """Equals one of `values` (SQL's IN)."""
        one_of = pb.OneOf(operand=self._operand, values=[to_value(v) for v in values])
        return Filter(pb.Filter(one_of=one_of))

    def is_null(self) -> Filter:
        """Is NULL (a JSON null, for a payload path)."""
        return Filter(pb.Filter(is_null=pb.IsNull(operand=self._operand)))

    def is_not_null(self) -> Filter:
        """Is not NULL."""
        return Filter(pb.Filter(is_null=pb.IsNull(operand=self._operand, negated=True)))

    def startswith(self, prefix: str) -> Filter:
        """Its text starts with `prefix` (byte-wise; no wildcards)."""
        return Filter(pb.Filter(prefix=pb.Prefix(operand=self._operand, prefix=prefix)))


def col(name: str) -> Operand:
    """A table's column."""
    return Operand(pb.Operand(column=name))


def path(dotted: str) -> Operand:
    """A dot path into a topic message's JSON payload ("user.id"; "" is the whole payload)."""
    return Operand(pb.Operand(path=dotted))


def key() -> Operand:
    """A topic message's key."""
    return Operand(pb.Operand(key=True))


def header(name: str) -> Operand:
    """A topic message's header."""
    return Operand(pb.Operand(header=name))


def to_value(value: Any) -> pb.Value:
    """A Python value as the protocol's `Value` (see the module docstring for the kinds)."""
    if value is None:
        raise TypeError("None compares with nothing: use .is_null() or .is_not_null()")
    if isinstance(value, bool):
        return pb.Value(bool=value)
    if isinstance(value, int):
        return pb.Value(int=value)
    if isinstance(value, float):
        return pb.Value(double=value)
    if isinstance(value, decimal.Decimal):
        return pb.Value(numeric=str(value))
    if isinstance(value, str):
        return pb.Value(text=value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return pb.Value(local_timestamp_micros=_micros(value - _LOCAL_EPOCH))
        return pb.Value(timestamp_micros=_micros(value - _EPOCH))
    if isinstance(value, dt.date):
        return pb.Value(date_days=(value - dt.date(1970, 1, 1)).days)
    raise TypeError(f"cannot compare with a {type(value).__name__}: {value!r}")


def _micros(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
