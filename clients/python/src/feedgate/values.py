"""Column values (`feedgate.v1.Value`) as Python values, without losing anything.

| Value kind               | Python                                                       |
|--------------------------|--------------------------------------------------------------|
| null                     | None                                                         |
| bool, int, double, text  | bool, int, float, str                                        |
| bytes                    | bytes                                                        |
| numeric                  | decimal.Decimal (exact; "NaN" and "Infinity" included)       |
| timestamp_micros         | datetime aware in UTC; the int of microseconds when outside Python's years 1-9999 |
| local_timestamp_micros   | naive datetime; the int of microseconds when outside 1-9999  |
| date_days                | datetime.date; the int of days when outside 1-9999           |
| json                     | the parsed JSON (dict, list, str, int, float, bool, None)    |
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from .v1 import feedgate_pb2 as pb

_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DATE = dt.date(1970, 1, 1)


def value_to_python(value: pb.Value) -> Any:
    """One `Value` as the Python value in the table above."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null":
        return None
    raw = getattr(value, kind)
    if kind == "numeric":
        return Decimal(raw)
    if kind == "json":
        return json.loads(raw)
    try:
        if kind == "timestamp_micros":
            return _EPOCH_UTC + dt.timedelta(microseconds=raw)
        if kind == "local_timestamp_micros":
            return _EPOCH + dt.timedelta(microseconds=raw)
        if kind == "date_days":
            return _EPOCH_DATE + dt.timedelta(days=raw)
    except OverflowError:
        return raw
    return raw


def row_to_dict(row: pb.Row) -> dict[str, Any]:
    """A `Row` as `{column: value}` with `value_to_python` values."""
    return {name: value_to_python(value) for name, value in row.columns.items()}


def key_of(key: pb.Row) -> Any:
    """A hashable primary key: the value itself for a one-column key, else a tuple of the
    values ordered by column name (a `Row` is a map, so the key's column order is not sent).
    JSON values (unhashable once parsed) stay JSON text."""
    names = sorted(key.columns)
    values = tuple(_hashable(key.columns[name]) for name in names)
    return values[0] if len(values) == 1 else values


def _hashable(value: pb.Value) -> Any:
    if value.WhichOneof("kind") == "json":
        return value.json
    return value_to_python(value)
