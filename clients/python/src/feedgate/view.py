"""A live materialized view of one table: a dict keyed by primary key, kept current from the
table's INITIAL / INSERT / UPDATE / DELETE events.

The view subscribes with `include_initial` and receives the snapshot into a dict of its own; at
`Ready` that dict becomes `rows` in one step and `ready` is set: `rows` is never a partial
snapshot. It applies events in the client's reader task (no queue of its own, so it never falls
behind the connection). A squashed batch (`min_interval_ms`) arrives whole (the subscription
holds it until its last event) and is applied in one step: `on_change` is called for its changes
once all of them are in `rows`, which never holds part of a batch. A dropped connection does not
concern it: the client resumes its subscription from the last cursor. When its subscription
cannot continue (`SOURCE_RESET`: the table was truncated; `RESUME_UNAVAILABLE`: the connection
dropped mid-snapshot, or the change log no longer reaches back far enough) the view rebuilds: a
new snapshot fills a new dict while the old rows stay readable unchanged (stale: `ready` is
clear), then it replaces them at once and `on_reset` is called. Any other end of the
subscription is kept in `error`, and `wait_ready()` raises it. Not here: the connection and the
resume itself (`client.py`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .errors import ErrorCode, FeedgateError
from .filters import Filter
from .v1 import feedgate_pb2 as pb
from .values import key_of, row_to_dict

if TYPE_CHECKING:
    from .client import Client
    from .subscription import Subscription
    from .testing.views import Condition


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
    #: The event's cursor (resume a subscription after it; of a squashed batch, only the last
    #: change's, the one without `more`).
    cursor: bytes
    #: More changes of the same squashed batch follow (`Event.more`). A batch is applied as a
    #: whole before `on_change` is called for each of its changes.
    more: bool = False


#: Called after every change the view applies (a squashed batch's once all of it is applied):
#: (kind, key, row, change); row is None for a delete, and `change` (a `ViewChange`) holds the
#: rest of what the event carried. A callback that takes three arguments is called with the
#: first three. The first snapshot's rows come as "initial" changes while it arrives (`rows`
#: shows them all at its `Ready`); a rebuild's rows do not: `on_reset` says that `rows` was
#: replaced as a whole.
ChangeCallback = Callable[..., None]

#: Called once each time a rebuilt snapshot has replaced `rows` (see the module doc), with the
#: error that made the view rebuild (`SOURCE_RESET` or `RESUME_UNAVAILABLE`).
ResetCallback = Callable[[FeedgateError], None]

#: The ends of a subscription after which the view rebuilds from a new snapshot.
_REBUILD_CODES = frozenset({ErrorCode.SOURCE_RESET, ErrorCode.RESUME_UNAVAILABLE})


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


@dataclass
class _Feed:
    """One subscription of the view: its snapshot fills `staging` until its `Ready`."""

    staging: dict[Any, dict[str, Any]] = field(default_factory=dict)
    #: Set at `Ready`: from then on changes apply to the view's `rows`.
    live: bool = False


_KINDS = {
    pb.CHANGE_KIND_INITIAL: "initial",
    pb.CHANGE_KIND_INSERT: "insert",
    pb.CHANGE_KIND_UPDATE: "update",
    pb.CHANGE_KIND_DELETE: "delete",
}


class MaterializedView:
    """`rows` maps each primary key (the value for a one-column key, else a tuple ordered by
    column name) to the row as a dict of Python values (see `feedgate.values`)."""

    def __init__(
        self,
        client: Client,
        table: str,
        on_change: ChangeCallback | None,
        on_reset: ResetCallback | None = None,
        filter: Filter | None = None,
        columns: Sequence[str] = (),
        min_interval_ms: int = 0,
    ) -> None:
        self._client = client
        self.table = table
        #: The rows the view holds: those this filter matches (None: all).
        self.filter = filter
        #: The columns its rows hold, with the primary key's (empty: all).
        self.columns = tuple(columns)
        #: Squash: at most one change per row per this many milliseconds (0: every change).
        self.min_interval_ms = min_interval_ms
        #: The table's rows by primary key: empty until the first snapshot is complete, then
        #: always a complete state (stale while `ready` is clear). Read it, don't write it; it
        #: is the same dict for the view's life.
        self.rows: dict[Any, dict[str, Any]] = {}
        #: Set while the view holds the complete, live state of the table.
        self.ready = asyncio.Event()
        #: Why the view stopped following the table; None while it follows.
        self.error: FeedgateError | None = None
        #: Number of times a rebuilt snapshot replaced the rows (`on_reset` calls).
        self.resets = 0
        self._on_change = on_change
        self._details = on_change is not None and _wants_details(on_change)
        self._on_reset = on_reset
        self._subscription: Subscription | None = None
        #: The `on_change` calls of the batch being applied, made at its last change.
        self._notices: list[tuple[Any, ...]] = []
        #: Why the view is rebuilding; None on the first snapshot and once live again.
        self._rebuilding: FeedgateError | None = None
        self._failed = asyncio.Event()
        self._stopped = False
        #: Set, and replaced by a fresh one, each time `rows` changes or the view fails: what
        #: `wait_until` waits on instead of polling.
        self._changed = asyncio.Event()

    async def _start(self) -> None:
        """Subscribes from a fresh snapshot, received into a new dict."""
        feed = _Feed()
        subscription = await self._client.subscribe_table(
            self.table,
            include_initial=True,
            filter=self.filter,
            columns=self.columns,
            min_interval_ms=self.min_interval_ms,
            on_event=lambda event: self._apply(feed, event),
        )
        self._subscription = subscription
        if self._stopped:  # close() while subscribing
            await subscription.unsubscribe()
            return
        self._client._spawn(self._watch(subscription))

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

    async def wait_until(self, condition: Condition, **options: Any) -> dict[Any, dict[str, Any]]:
        """Waits until `condition` (a function of `rows`, or the expected rows) holds; see
        `feedgate.testing.wait_until`."""
        __tracebackhide__ = True  # pytest: show the test's line, not this one
        from .testing.views import wait_until

        return await wait_until(self, condition, **options)

    def _touch(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def close(self) -> None:
        """Stops following the table (unsubscribes); `rows` keeps its last state."""
        self._stopped = True
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: Any, default: Any = None) -> Any:
        return self.rows.get(key, default)

    def _apply(self, feed: _Feed, event: pb.Event) -> None:
        body = event.WhichOneof("body")
        if body == "ready":
            if not feed.live:
                self._publish(feed)
            return
        if body != "change":
            return
        target = self.rows if feed.live else feed.staging
        change = event.change
        key = key_of(change.key)
        kind = _KINDS.get(change.kind, "unknown")
        if change.kind == pb.CHANGE_KIND_DELETE:
            target.pop(key, None)
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
                    target.pop(old_key, None)
            row = row_to_dict(change.new_row)
            target[key] = row
        if feed.live and not event.more:
            self._touch()
        if self._on_change is None or (not feed.live and self._rebuilding):
            return
        if not self._details:
            self._notify(event.more, (kind, key, row))
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
            more=event.more,
        )
        self._notify(event.more, (kind, key, row, details))

    def _notify(self, more: bool, notice: tuple[Any, ...]) -> None:
        """Calls `on_change` with `notice`, or, while its batch goes on (`more`), once the
        batch's last change is applied too."""
        self._notices.append(notice)
        if more:
            return
        notices, self._notices = self._notices, []
        for arguments in notices:
            if self._on_change is not None:
                self._on_change(*arguments)

    def _publish(self, feed: _Feed) -> None:
        """A complete snapshot becomes `rows`, in one step (no await between clearing and
        filling: no other task can see the dict in between), and the view is live."""
        self.rows.clear()
        self.rows.update(feed.staging)
        feed.staging.clear()
        feed.live = True
        self.ready.set()
        self._touch()
        reason, self._rebuilding = self._rebuilding, None
        if reason is not None:
            self.resets += 1
            if self._on_reset is not None:
                self._on_reset(reason)

    async def _watch(self, subscription: Subscription) -> None:
        error = await subscription.wait_closed()
        if self._stopped or error is None:
            return
        if error.code in _REBUILD_CODES:
            self.ready.clear()
            if self._rebuilding is None:
                self._rebuilding = error
            rebuilt = await self._rebuild()
            if rebuilt is None:
                return
            error = rebuilt
        self.error = error
        self._failed.set()
        self._touch()

    async def _rebuild(self) -> FeedgateError | None:
        """Subscribes again from a fresh snapshot, retrying retryable refusals (e.g.
        SOURCE_UNAVAILABLE, or the connection dropping before the answer); returns the error
        that stopped it, None once subscribed (or when the view or the client was closed)."""
        attempt = 0
        while not self._stopped:
            try:
                await self._start()
                return None
            except FeedgateError as err:
                if self._client._closing:
                    return None
                if not err.retryable or self._client.state == "closed":
                    return err
                await asyncio.sleep(max(err.retry_after_ms / 1000, self._client._backoff(attempt)))
                attempt += 1
        return None


async def materialized_view(
    client: Client,
    table: str,
    *,
    filter: Filter | None = None,
    columns: Sequence[str] = (),
    min_interval_ms: int = 0,
    on_change: ChangeCallback | None = None,
    on_reset: ResetCallback | None = None,
) -> MaterializedView:
    """Subscribes to `table` with its initial rows and returns the view (not yet ready: await
    `view.wait_ready()`)."""
    view = MaterializedView(client, table, on_change, on_reset, filter, columns, min_interval_ms)
    await view._start()
    return view
