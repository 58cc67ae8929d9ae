"""A live materialized view of one table: a dict keyed by primary key, kept current from the
table's INITIAL / INSERT / UPDATE / DELETE events.

The view subscribes with `include_initial`, so it first fills from the snapshot; `ready` is set
when the snapshot is complete and the view is live. It applies events in the client's reader
task (no queue of its own, so it never falls behind the connection). When the server resets the
source (`SOURCE_RESET`: the table was truncated) the view clears itself, clears `ready`, and
subscribes again to rebuild; any other end of the subscription is kept in `error`, and
`wait_ready()` raises it.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from .errors import ErrorCode, FeedgateError
from .v1 import feedgate_pb2 as pb
from .values import key_of, row_to_dict

if TYPE_CHECKING:
    from .client import Client, Subscription


@dataclass(frozen=True)
class ViewChange:
    """What one change event carried, as the view applied it."""

    #: "initial", "insert", "update" or "delete".
    kind: str
    #: The row's primary key (see `MaterializedView.rows`).
    key: Any
    #: The row after the change; None for a delete.
    row: dict[str, Any] | None
    #: The row before the change (updates and deletes); None otherwise.
    old_row: dict[str, Any] | None
    #: When the writing transaction ran (its `now()`, in UTC); None for initial rows.
    commit_time: datetime | None
    #: The writing transaction's id (`xid8`); changes with the same id were one transaction.
    transaction_id: int
    #: The event's cursor (resume a subscription after it).
    cursor: bytes


#: Called after every change the view applies: (kind, key, row, change); row is None for a
#: delete, and `change` (a `ViewChange`) holds the rest of what the event carried. A callback
#: that takes three arguments is called with the first three.
ChangeCallback = Callable[..., None]


def _wants_details(callback: Callable[..., None]) -> bool:
    """Whether `callback` takes a fourth positional argument (or any number of them)."""
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = 0
    for parameter in parameters:
        if parameter.kind == parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 4

_KINDS = {
    pb.CHANGE_KIND_INITIAL: "initial",
    pb.CHANGE_KIND_INSERT: "insert",
    pb.CHANGE_KIND_UPDATE: "update",
    pb.CHANGE_KIND_DELETE: "delete",
}


class MaterializedView:
    """`rows` maps each primary key (the value for a one-column key, else a tuple ordered by
    column name) to the row as a dict of Python values (see `feedgate.values`)."""

    def __init__(self, client: Client, table: str, on_change: ChangeCallback | None) -> None:
        self._client = client
        self.table = table
        #: The table's rows by primary key; read it, don't write it.
        self.rows: dict[Any, dict[str, Any]] = {}
        #: Set while the view holds the complete, live state of the table.
        self.ready = asyncio.Event()
        #: Why the view stopped following the table; None while it follows.
        self.error: FeedgateError | None = None
        #: Number of times the view was rebuilt after a SOURCE_RESET.
        self.resets = 0
        self._on_change = on_change
        self._details = on_change is not None and _wants_details(on_change)
        self._subscription: Subscription | None = None
        self._failed = asyncio.Event()
        self._stopped = False

    async def _start(self) -> None:
        self._subscription = await self._client.subscribe_table(
            self.table, include_initial=True, on_event=self._apply
        )
        self._client._spawn(self._watch(self._subscription))

    async def wait_ready(self) -> None:
        """Waits until the view holds the table's complete state; raises the view's error if
        its subscription ended instead."""
        ready = asyncio.ensure_future(self.ready.wait())
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait({ready, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            failed.cancel()
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        """Stops following the table (unsubscribes); `rows` keeps its last state."""
        self._stopped = True
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: Any, default: Any = None) -> Any:
        return self.rows.get(key, default)

    def _apply(self, event: pb.Event) -> None:
        body = event.WhichOneof("body")
        if body == "ready":
            self.ready.set()
            return
        if body != "change":
            return
        change = event.change
        key = key_of(change.key)
        kind = _KINDS.get(change.kind, "unknown")
        if change.kind == pb.CHANGE_KIND_DELETE:
            self.rows.pop(key, None)
            row = None
        else:
            if change.kind == pb.CHANGE_KIND_UPDATE and change.HasField("old_row"):
                # An update may change the primary key: drop the row under its old key.
                old = pb.Row()
                for name in change.key.columns:
                    if name in change.old_row.columns:
                        old.columns[name].CopyFrom(change.old_row.columns[name])
                old_key = key_of(old)
                if old_key != key:
                    self.rows.pop(old_key, None)
            row = row_to_dict(change.new_row)
            self.rows[key] = row
        if self._on_change is None:
            return
        if not self._details:
            self._on_change(kind, key, row)
            return
        micros = change.commit_time_micros
        details = ViewChange(
            kind=kind,
            key=key,
            row=row,
            old_row=row_to_dict(change.old_row) if change.HasField("old_row") else None,
            commit_time=(
                datetime.fromtimestamp(micros / 1_000_000, tz=timezone.utc) if micros else None
            ),
            transaction_id=change.transaction_id,
            cursor=bytes(event.cursor),
        )
        self._on_change(kind, key, row, details)

    async def _watch(self, subscription: Subscription) -> None:
        error = await subscription.wait_closed()
        if self._stopped or error is None:
            return
        if error.code == ErrorCode.SOURCE_RESET:
            self.ready.clear()
            self.rows.clear()
            self.resets += 1
            try:
                await self._start()
                return
            except FeedgateError as err:
                error = err
        self.error = error
        self._failed.set()


async def materialized_view(
    client: Client, table: str, *, on_change: ChangeCallback | None = None
) -> MaterializedView:
    """Subscribes to `table` with its initial rows and returns the view (not yet ready: await
    `view.wait_ready()`)."""
    view = MaterializedView(client, table, on_change)
    await view._start()
    return view
