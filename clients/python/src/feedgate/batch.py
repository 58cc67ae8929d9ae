"""Batches of a squashing subscription (`min_interval_ms`): the events of one batch held until
its last one is in, then released together.

The server sends what a squash window held as one batch, every event but the last with
`Event.more` set. A `Batch` holds the events with `more` and releases them with the event that
ends the batch, so that subscribers, iterators and views never see part of one, and so that the
position a subscription resumes from is always a batch's end (a cursor from the middle of a
batch would resume after rows the client never applied). A batch cut by a dropped connection is
dropped here: the resume sends its changes again. Events without `more` (every event of a
subscription that does not squash) pass straight through. No I/O, no asyncio: the subscription
feeds it (subscription.py).
"""

from __future__ import annotations

from .errors import ErrorCode, FeedgateError
from .v1 import feedgate_pb2 as pb

#: Events one batch may have. The server sends a squash window early once it holds 10,000 rows
#: or keys (docs/changefeeds.md, "Squashing"), so no batch is longer: past this the
#: subscription ends with `LIMIT_EXCEEDED` rather than hold events without a bound.
MAX_BATCH = 10_000


class Batch:
    """The events received of the current batch, not yet released."""

    def __init__(self, limit: int = MAX_BATCH) -> None:
        self._limit = limit
        self._held: list[pb.Event] = []

    def __len__(self) -> int:
        """Events held: received with `more`, waiting for their batch's last event."""
        return len(self._held)

    def add(self, event: pb.Event) -> list[pb.Event]:
        """What to deliver now that `event` arrived: nothing while it continues a batch (it is
        held), else the batch it ends (the held events, then it), in order; a lone event alone.
        Raises `FeedgateError` (LIMIT_EXCEEDED) when a batch grows past the limit; the held
        events are dropped then."""
        if not event.more:
            if not self._held:
                return [event]
            released, self._held = self._held, []
            released.append(event)
            return released
        if len(self._held) + 1 >= self._limit:
            self._held = []
            raise FeedgateError(
                ErrorCode.LIMIT_EXCEEDED,
                f"a squashed batch (Event.more) of more than {self._limit} events: more than "
                "the client holds, and more than a squash window sends",
                details={"limit": str(self._limit)},
            )
        self._held.append(event)
        return []

    def drop(self) -> int:
        """Drops the held part of a batch (its connection ended: the resume from the last whole
        batch's cursor sends those changes again); returns how many events it held."""
        dropped = len(self._held)
        self._held = []
        return dropped
