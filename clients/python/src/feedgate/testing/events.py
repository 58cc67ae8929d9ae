"""What an expectation compares: events as `Received` values, what a test expects of one (`Spec`),
and how both read in a failure message.

A `Received` is one event made plain: its kind (`INITIAL`, `INSERT`, `UPDATE`, `DELETE`,
`MESSAGE`, `READY`, `STATUS`), the row as a dict (the new row; a delete's old row), the old row,
the key, and for topic messages the payload (decoded as JSON when it is JSON). A `Spec` matches
one: a kind, `where` (each named field equal to its value, or satisfying it when the value is a
function), `old` (the same for an update's or delete's old row), `key` and `payload`. Field
values compare with `==`, so `unittest.mock.ANY` and `pytest.approx` work. Not here: waiting
(expect.py).
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from ..v1 import feedgate_pb2 as pb
from ..values import key_of, row_to_dict

Kind = Literal["INITIAL", "INSERT", "UPDATE", "DELETE", "MESSAGE", "READY", "STATUS"]

#: Kinds that carry data; the others (`READY`, `STATUS`) are passed over unless asked for.
DATA_KINDS: frozenset[str] = frozenset({"INITIAL", "INSERT", "UPDATE", "DELETE", "MESSAGE"})

_CHANGE_KINDS = {
    pb.CHANGE_KIND_INITIAL: "INITIAL",
    pb.CHANGE_KIND_INSERT: "INSERT",
    pb.CHANGE_KIND_UPDATE: "UPDATE",
    pb.CHANGE_KIND_DELETE: "DELETE",
}

_NO_JSON = object()


@dataclass(frozen=True)
class Received:
    """One event of a subscription, as an expectation sees it."""

    kind: str
    #: Table changes: the row after the change, or for a DELETE the row that was deleted.
    #: Topic messages: the payload when it is a JSON object. Else None.
    row: dict[str, Any] | None
    #: The row before an UPDATE or DELETE (the columns the server sent); else None.
    old_row: dict[str, Any] | None
    #: A change's primary key (see `feedgate.key_of`); a message's key; else None.
    key: Any
    #: A message's payload: the parsed JSON when it is JSON, else the bytes.
    payload: Any
    #: The event as it arrived.
    event: pb.Event = field(repr=False)
    #: Seconds after the expectation started waiting.
    at: float = 0.0

    @property
    def is_data(self) -> bool:
        return self.kind in DATA_KINDS


def received(event: pb.Event, at: float = 0.0) -> Received:
    """`event` as a `Received`."""
    body = event.WhichOneof("body")
    if body == "change":
        change = event.change
        kind = _CHANGE_KINDS.get(change.kind, "UNKNOWN")
        old = row_to_dict(change.old_row) if change.HasField("old_row") else None
        new = row_to_dict(change.new_row) if change.HasField("new_row") else None
        row = old if kind == "DELETE" else new
        return Received(kind, row, old, key_of(change.key), None, event, at)
    if body == "message":
        message = event.message
        payload = _json(message.payload)
        row = payload if isinstance(payload, dict) else None
        shown = bytes(message.payload) if payload is _NO_JSON else payload
        return Received("MESSAGE", row, None, message.key or None, shown, event, at)
    if body == "ready":
        return Received("READY", None, None, None, None, event, at)
    return Received("STATUS", None, None, None, None, event, at)


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return _NO_JSON


Check = Union[Any, Callable[[Any], bool]]


@dataclass(frozen=True)
class Spec:
    """What one expected event must be. Every part left None matches anything."""

    kind: str | None = None
    where: Mapping[str, Check] | None = None
    old: Mapping[str, Check] | None = None
    key: Check | None = None
    payload: Check | None = None

    @property
    def wants_control(self) -> bool:
        """Whether it asks for a READY or STATUS event (those are passed over otherwise)."""
        return self.kind is not None and self.kind not in DATA_KINDS

    def mismatches(self, got: Received) -> list[str]:
        """Why `got` is not this event, one line per difference; empty when it matches."""
        if self.kind is not None and got.kind != self.kind:
            return [f"kind: expected {self.kind}, got {got.kind}"]
        out: list[str] = []
        out += _fields("", self.where, got.row)
        out += _fields("old ", self.old, got.old_row)
        if self.key is not None and not _check(self.key, got.key):
            out.append(f"key: expected {_show_check(self.key)}, got {short(got.key)}")
        if self.payload is not None and not _check(self.payload, got.payload):
            out.append(f"payload: expected {_show_check(self.payload)}, got {short(got.payload)}")
        return out

    def __str__(self) -> str:
        parts = [self.kind or "event"]
        if self.where is not None:
            parts.append(f"where {_show_fields(self.where)}")
        if self.old is not None:
            parts.append(f"old {_show_fields(self.old)}")
        if self.key is not None:
            parts.append(f"key {_show_check(self.key)}")
        if self.payload is not None:
            parts.append(f"payload {_show_check(self.payload)}")
        return " ".join(parts)


SpecLike = Union[Spec, str, tuple[str, Mapping[str, Any]], Mapping[str, Any]]


def spec(item: SpecLike) -> Spec:
    """A `Spec` from what a test wrote: a `Spec`; a kind ("INSERT"); a (kind, where) pair; or a
    mapping of `Spec`'s fields ({"kind": "INSERT", "where": {"id": 1}})."""
    if isinstance(item, Spec):
        return item
    if isinstance(item, str):
        return make_spec(kind=item)
    if isinstance(item, tuple) and len(item) == 2:
        return make_spec(kind=item[0], where=item[1])
    if isinstance(item, Mapping):
        return make_spec(**item)
    raise TypeError(f"an expected event is a kind, a (kind, where) pair or a mapping, not {item!r}")


def make_spec(kind: str | None = None, **parts: Any) -> Spec:
    """A `Spec`, its kind upper-cased and checked."""
    if kind is not None:
        kind = kind.upper()
        if kind not in DATA_KINDS | {"READY", "STATUS"}:
            raise ValueError(f"unknown event kind {kind!r}")
    return Spec(kind=kind, **parts)


def _fields(prefix: str, want: Mapping[str, Check] | None, row: dict[str, Any] | None) -> list[str]:
    if want is None:
        return []
    if row is None:
        return [f"{prefix}row: expected {_show_fields(want)}, got no {prefix}row"]
    out = []
    for name, check in want.items():
        if name not in row:
            out.append(f"{prefix}{name}: expected {_show_check(check)}, got no such column")
        elif not _check(check, row[name]):
            out.append(f"{prefix}{name}: expected {_show_check(check)}, got {short(row[name])}")
    return out


def _check(check: Check, value: Any) -> bool:
    if callable(check) and not isinstance(check, type):
        try:
            return bool(check(value))
        except Exception:  # a predicate that cannot judge the value: not a match
            return False
    return bool(check == value)


def _show_check(check: Check) -> str:
    if callable(check) and not isinstance(check, type):
        name = getattr(check, "__name__", "")
        return "<lambda>" if name == "<lambda>" else f"{name or repr(check)}(...)"
    return short(check)


def _show_fields(fields: Mapping[str, Check]) -> str:
    return "{" + ", ".join(f"{name!r}: {_show_check(c)}" for name, c in fields.items()) + "}"


_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 80
_short.maxdict = 12
_short.maxlist = 12


def short(value: Any) -> str:
    """`repr(value)`, shortened for a failure message."""
    return _short.repr(value)


def describe(got: Received) -> str:
    """One event on one line: `INSERT {'id': 7, ...}`, with the old row of an update."""
    if got.kind == "MESSAGE":
        key = f" key={got.key!r}" if got.key else ""
        topic = got.event.message.topic
        return f"MESSAGE {topic}{key} payload={short(got.payload)}"
    if got.kind == "READY":
        return "READY"
    if got.kind == "STATUS":
        status = got.event.status
        error = f" ({status.error.message})" if status.HasField("error") else ""
        return f"STATUS {'available' if status.available else 'unavailable'}{error}"
    text = f"{got.kind} {short(got.row)}"
    if got.kind == "UPDATE" and got.old_row is not None:
        text += f" (old: {short(got.old_row)})"
    return text
