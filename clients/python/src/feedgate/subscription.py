"""One subscription as the application sees it: a stream of events that outlives connections.

A `Subscription` keeps what resubscribing needs (its feed, its last cursor) so that the client can
resume it on a new connection with the same id, and delivers the resumed stream as if nothing
happened: the server's second `Ready` is swallowed. A squashing subscription's batches
(`Event.more`) are delivered whole, once their last event is in (batch.py), and only a batch's
end moves the resume position. It either calls the subscriber's callback or queues events for
`async for`. It does no I/O of its own; `client.py` sends its requests.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .batch import Batch
from .errors import ConnectionClosedError, ErrorCode, FeedgateError
from .v1 import feedgate_pb2 as pb

if TYPE_CHECKING:
    from .client import Client
    from .connection import Connection
    from .testing.events import Received, SpecLike

EventCallback = Callable[[pb.Event], None]


class Subscription:
    """One subscription. Iterate it with `async for` to receive its `feedgate.v1.Event`s (Ready,
    changes, messages, source status); iteration ends after `unsubscribe()` and raises
    `FeedgateError` when the server ends the subscription (the `SubscriptionClosed` error), when
    it cannot be resumed after a reconnect, or when the client closes for good. Subscribed with
    `on_event=`, events go to that callback instead. A dropped connection does not end it: the
    client resumes it from its last cursor (see the README's "Reconnecting")."""

    def __init__(
        self,
        client: Client,
        subscription_id: int,
        feed: dict[str, Any],
        resume_from: bytes,
        on_event: EventCallback | None,
        queue_size: int,
    ) -> None:
        self._client = client
        #: The id this client chose; every event for this subscription carries it, on every
        #: connection it is resumed on.
        self.id = subscription_id
        #: Set when the `Ready` event arrived: the initial rows (if any) are all delivered. Stays
        #: set across reconnects (a resumed stream's `Ready` is not delivered again).
        self.ready = asyncio.Event()
        #: The cursor of the last event with a position (including `Ready`'s) that ended its
        #: batch: where a resume continues. Events of a squashed batch but its last (those with
        #: `more`) do not move it.
        self.last_cursor = b""
        #: The source as first requested (`{"table": TableFeed}` or `{"topic": TopicFeed}`),
        #: sent again on every resume.
        self._feed = feed
        #: The `resume_from` the application asked for: the resume position until an event
        #: brings a newer one.
        self._resume_from = resume_from
        #: The connection whose server holds (or is being asked for) this subscription: the one
        #: an `Unsubscribe` must go to. None before the first `Subscribe` is sent.
        self._connection: Connection | None = None
        self._on_event = on_event
        self._queue: collections.deque[pb.Event] = collections.deque()
        self._queue_size = queue_size
        #: The received part of a squashed batch, held until its last event.
        self._batch = Batch()
        self._wakeup = asyncio.Event()
        self._ended = False
        self._error: FeedgateError | None = None
        self._done = asyncio.Event()

    @property
    def closed(self) -> bool:
        """Whether the subscription has ended (no further events will arrive)."""
        return self._ended

    @property
    def error(self) -> FeedgateError | None:
        """Why the server, a failed resume or the client's close ended the subscription; None
        while open or after `unsubscribe()`."""
        return self._error

    async def unsubscribe(self) -> None:
        """Ends the subscription; events queued before the server's `Unsubscribed` are still
        yielded, none after it. While the client is reconnecting it ends here at once (the new
        connection never hears of it)."""
        if self._ended:
            return
        connection = self._connection
        if connection is None or connection.lost is not None:
            self._client._end(self, None)
            return
        try:
            await connection.request(
                {"unsubscribe": pb.Unsubscribe(subscription_id=self.id)},
                on_lost=lambda: self._client._end(self, None),
            )
        except ConnectionClosedError:
            if not self._ended or self._error is not None:
                raise
        except FeedgateError as err:
            # A resubscribe still in flight that the server refused: gone either way.
            if err.code != ErrorCode.SUBSCRIPTION_NOT_FOUND:
                raise
        self._client._end(self, None)

    async def wait_closed(self) -> FeedgateError | None:
        """Waits until the subscription ends; returns its error (None after `unsubscribe()`)."""
        await self._done.wait()
        return self._error

    def __aiter__(self) -> AsyncIterator[pb.Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[pb.Event]:
        if self._on_event is not None:
            raise TypeError("this subscription delivers to its on_event callback")
        while True:
            while self._queue:
                yield self._queue.popleft()
            if self._ended:
                if self._error is not None:
                    raise self._error
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    async def expect(self, kind: str | None = None, **options: Any) -> Received:
        """Waits for the next event and asserts what it is; see `feedgate.testing.expect`."""
        __tracebackhide__ = True  # pytest: show the test's line, not this one
        from .testing.expect import expect

        return await expect(self, kind, **options)

    async def expect_sequence(self, events: Sequence[SpecLike], **options: Any) -> list[Received]:
        """Asserts the next events, in order; see `feedgate.testing.expect_sequence`."""
        __tracebackhide__ = True
        from .testing.expect import expect_sequence

        return await expect_sequence(self, events, **options)

    async def expect_nothing(self, for_: float, **options: Any) -> list[Received]:
        """Asserts that no event arrives for `for_` seconds; see
        `feedgate.testing.expect_nothing`."""
        __tracebackhide__ = True
        from .testing.expect import expect_nothing

        return await expect_nothing(self, for_, **options)

    async def _next_within(self, timeout: float) -> pb.Event | None:
        """The next queued event, waiting at most `timeout` seconds: None when none came in
        time, or when the subscription ended without an error; raises its error when it ended
        with one. For the test helpers (`feedgate.testing`), which wait with a deadline."""
        if self._on_event is not None:
            raise TypeError("this subscription delivers to its on_event callback")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._queue and not self._ended:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return None
        if self._queue:
            return self._queue.popleft()
        if self._error is not None:
            raise self._error
        return None

    # Called by the client.
    def _first_request(self) -> pb.Subscribe:
        """The `Subscribe` the application asked for."""
        return pb.Subscribe(subscription_id=self.id, resume_from=self._resume_from, **self._feed)

    def _resume_request(self) -> pb.Subscribe | None:
        """The `Subscribe` that continues this subscription on a new connection, from its last
        cursor; None when it has no position to resume from (see `_no_position`). The part of a
        batch that the old connection delivered is dropped: the resume sends it again."""
        self._batch.drop()
        position = self.last_cursor or self._resume_from
        if not position:
            return None
        return pb.Subscribe(subscription_id=self.id, resume_from=position, **self._feed)

    def _no_position(self) -> FeedgateError:
        """Why a subscription without a cursor ends at a reconnect: subscribing again from
        "now" would skip whatever happened while the connection was down."""
        return FeedgateError(
            ErrorCode.RESUME_UNAVAILABLE,
            "the connection dropped before the subscription had a position to resume from "
            "(no event with a cursor had arrived yet, e.g. during a table's initial rows); "
            "subscribe again (tables: with include_initial) to rebuild",
            retryable=True,
            details={"subscription_id": str(self.id)},
        )

    def _deliver(self, event: pb.Event) -> None:
        """Delivers an event of the current connection; held while it continues a batch."""
        try:
            events = self._batch.add(event)
        except FeedgateError as err:  # a batch longer than any squash window
            self._client._fail(self, err.code, err.message)
            return
        if not events:
            return
        if events[-1].cursor:
            self.last_cursor = events[-1].cursor
        if self._on_event is not None:
            for each in events:
                self._deliver_one(each, self._on_event)
            return
        if len(self._queue) + len(events) > self._queue_size:  # a batch is queued whole or not
            self._client._overflow(self)
            return
        for each in events:
            self._deliver_one(each, self._queue.append)
        self._wakeup.set()

    def _deliver_one(self, event: pb.Event, to: Callable[[pb.Event], None]) -> None:
        if event.WhichOneof("body") == "ready":
            if self.ready.is_set():
                return  # a resumed stream's Ready: this subscription delivered its own already
            self.ready.set()
        to(event)

    def _finish(self, error: FeedgateError | None) -> None:
        self._batch.drop()
        self._ended = True
        self._error = error
        self._wakeup.set()
        self._done.set()
