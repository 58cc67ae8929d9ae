"""The asyncio client: one WebSocket, requests correlated by `request_id`, events routed to
subscriptions by `subscription_id`.

One task reads the socket. A `Response` resolves the future of the request with its id; an `Event`
goes to its subscription, which either calls the subscriber's callback right there or appends it
to the subscription's bounded queue for `async for`. The protocol itself is described in
docs/protocol.md; this module adds nothing to it but Python idioms.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Generator, Mapping

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from .errors import ConnectionClosedError, ErrorCode, FeedgateError
from .v1 import feedgate_pb2 as pb
from .view import ChangeCallback, MaterializedView, materialized_view

log = logging.getLogger("feedgate")

#: Events an `async for` subscription holds before its consumer reads them. When it is full the
#: client ends that subscription with `FeedgateError(SLOW_CONSUMER)` (raised once the events
#: already queued have been read) and unsubscribes it on the server: nothing is dropped silently,
#: and one slow iterator never stalls the other subscriptions on the connection.
DEFAULT_QUEUE_SIZE = 10_000

#: Largest server message accepted (a row with big values can be large). A larger one closes
#: the connection with 1009.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024

EventCallback = Callable[[pb.Event], None]


class Subscription:
    """One subscription. Iterate it with `async for` to receive its `feedgate.v1.Event`s (Ready,
    changes, messages, source status); iteration ends after `unsubscribe()` and raises
    `FeedgateError` when the server ends the subscription (the `SubscriptionClosed` error) or the
    connection is lost. Subscribed with `on_event=`, events go to that callback instead.
    """

    def __init__(
        self, client: Client, subscription_id: int, on_event: EventCallback | None, queue_size: int
    ) -> None:
        self._client = client
        #: The id this client chose; every event for this subscription carries it.
        self.id = subscription_id
        #: Set when the `Ready` event arrived: the initial rows (if any) are all delivered.
        self.ready = asyncio.Event()
        #: The cursor of the last event with a position, for `resume_from`.
        self.last_cursor = b""
        self._on_event = on_event
        self._queue: collections.deque[pb.Event] = collections.deque()
        self._queue_size = queue_size
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
        """Why the server or the connection ended the subscription; None while open or after
        `unsubscribe()`."""
        return self._error

    async def unsubscribe(self) -> None:
        """Ends the subscription; events queued before the server's `Unsubscribed` are still
        yielded, none after it."""
        if self._ended:
            return
        await self._client._request(unsubscribe=pb.Unsubscribe(subscription_id=self.id))
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

    # Called by the client's reader task.
    def _deliver(self, event: pb.Event) -> None:
        if event.cursor:
            self.last_cursor = event.cursor
        if event.WhichOneof("body") == "ready":
            self.ready.set()
        if self._on_event is not None:
            self._on_event(event)
            return
        if len(self._queue) >= self._queue_size:
            self._client._overflow(self)
            return
        self._queue.append(event)
        self._wakeup.set()

    def _finish(self, error: FeedgateError | None) -> None:
        self._ended = True
        self._error = error
        self._wakeup.set()
        self._done.set()


class Client:
    """A connection to a feedgate server. Create it with `await feedgate.connect(url)` or
    `async with feedgate.connect(url) as client:`."""

    def __init__(self, ws: ClientConnection, *, queue_size: int) -> None:
        self._ws = ws
        self._queue_size = queue_size
        self._request_ids = itertools.count(1)
        self._subscription_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[pb.Response]] = {}
        self._subscriptions: dict[int, Subscription] = {}
        self._closed: FeedgateError | None = None
        self._closing = False
        self._background: set[asyncio.Task[Any]] = set()
        #: The server's `Welcome` (session id, server version, limits).
        self.welcome: pb.Welcome | None = None
        self._reader = asyncio.create_task(self._read_loop(), name="feedgate-reader")

    # ----------------------------------------------------------------------------------------
    # Commands
    # ----------------------------------------------------------------------------------------

    async def hello(self, token: str = "", client_name: str = "") -> pb.Welcome:
        """Sends `Hello` (protocol version 1, the token if any) and returns the `Welcome`."""
        response = await self._request(
            hello=pb.Hello(protocol_version=1, token=token, client_name=client_name)
        )
        self.welcome = response.welcome
        return response.welcome

    async def subscribe_table(
        self,
        table: str,
        *,
        include_initial: bool = False,
        resume_from: bytes = b"",
        on_event: EventCallback | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Subscribes to a PostgreSQL table's changes ("schema.table" or "table"). With
        `include_initial`, every existing row arrives as an INITIAL change before `Ready`."""
        feed = pb.TableFeed(table=table, include_initial=include_initial)
        return await self._subscribe({"table": feed}, resume_from, on_event, queue_size)

    async def subscribe_topic(
        self,
        topic: str,
        *,
        start: str | int = "latest",
        resume_from: bytes = b"",
        on_event: EventCallback | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Subscribes to a topic. `start`: "latest" (what is published after this returns),
        "earliest", or an int offset (Kafka and in-process topics serve all three, in-process
        ones from the messages the server still keeps; RabbitMQ topics only "latest")."""
        feed = pb.TopicFeed(topic=topic)
        if start == "earliest":
            feed.start = pb.START_POSITION_EARLIEST
        elif isinstance(start, int) and not isinstance(start, bool):
            feed.start = pb.START_POSITION_OFFSET
            feed.start_offset = start
        elif start != "latest":
            raise ValueError(f"start must be 'latest', 'earliest' or an offset, not {start!r}")
        return await self._subscribe({"topic": feed}, resume_from, on_event, queue_size)

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        key: str = "",
        headers: Mapping[str, str] | None = None,
        idempotency_key: str = "",
    ) -> pb.Published:
        """Publishes to a topic; returns once its backend accepted the message (`Published`
        carries its `offset` and `cursor`). A str payload is sent as UTF-8."""
        if isinstance(payload, str):
            payload = payload.encode()
        publish = pb.Publish(
            topic=topic,
            payload=payload,
            key=key,
            headers=dict(headers or {}),
            idempotency_key=idempotency_key,
        )
        return (await self._request(publish=publish)).published

    async def materialized_view(
        self, table: str, *, on_change: ChangeCallback | None = None
    ) -> MaterializedView:
        """A live dict of `table`'s rows keyed by primary key (see `feedgate.view`); await
        `view.wait_ready()` before reading it."""
        return await materialized_view(self, table, on_change=on_change)

    async def authenticate(self, token: str) -> pb.Authenticated:
        """Authenticates with `token`, or refreshes the connection's token before it expires (same
        user and tenant); returns who the connection is and until when. A refused token raises
        `FeedgateError` (UNAUTHENTICATED) and changes nothing."""
        return (await self._request(authenticate=pb.Authenticate(token=token))).authenticated

    async def ping(self) -> int:
        """A round trip; returns the server's clock in microseconds since the Unix epoch. Every
        event queued for this client before the ping has arrived when it returns."""
        return (await self._request(ping=pb.Ping())).pong.server_time_micros

    async def close(self) -> None:
        """Closes the connection. Open subscriptions end (iteration stops without an error);
        pending requests fail with `ConnectionClosedError`."""
        self._closing = True
        await self._ws.close()
        await asyncio.shield(self._reader)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ----------------------------------------------------------------------------------------
    # Plumbing
    # ----------------------------------------------------------------------------------------

    async def _subscribe(
        self,
        source: dict[str, Any],
        resume_from: bytes,
        on_event: EventCallback | None,
        queue_size: int | None,
    ) -> Subscription:
        sub_id = next(self._subscription_ids)
        subscription = Subscription(self, sub_id, on_event, queue_size or self._queue_size)
        # Registered before the request leaves: events can follow `Subscribed` at once.
        self._subscriptions[sub_id] = subscription
        request = pb.Subscribe(subscription_id=sub_id, resume_from=resume_from, **source)
        try:
            await self._request(subscribe=request)
        except BaseException:
            self._subscriptions.pop(sub_id, None)
            raise
        return subscription

    async def _request(self, **command: Any) -> pb.Response:
        if self._closed is not None:
            raise self._closed
        request_id = next(self._request_ids)
        future: asyncio.Future[pb.Response] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send(pb.Request(request_id=request_id, **command).SerializeToString())
            response = await future
        except ConnectionClosed:
            await asyncio.shield(self._reader)
            assert self._closed is not None  # the reader sets it before it ends
            raise self._closed from None
        finally:
            self._pending.pop(request_id, None)
        if response.WhichOneof("result") == "error":
            raise FeedgateError.from_pb(response.error)
        return response

    def _end(self, subscription: Subscription, error: FeedgateError | None) -> None:
        if self._subscriptions.get(subscription.id) is subscription:
            del self._subscriptions[subscription.id]
        subscription._finish(error)

    def _overflow(self, subscription: Subscription) -> None:
        self._fail(
            subscription,
            ErrorCode.SLOW_CONSUMER,
            f"client-side queue of {subscription._queue_size} events is full: the "
            "subscription was not read fast enough and has been ended",
            retryable=True,
        )

    def _fail(
        self, subscription: Subscription, code: int, message: str, *, retryable: bool = False
    ) -> None:
        """Ends a subscription on this side with a client-made error, and on the server."""
        details = {"subscription_id": str(subscription.id)}
        self._end(subscription, FeedgateError(code, message, retryable=retryable, details=details))
        self._spawn(self._unsubscribe_quietly(subscription.id))

    async def _unsubscribe_quietly(self, subscription_id: int) -> None:
        try:
            await self._request(unsubscribe=pb.Unsubscribe(subscription_id=subscription_id))
        except FeedgateError:
            pass

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read_loop(self) -> None:
        failure: FeedgateError | None = None
        try:
            async for frame in self._ws:
                if isinstance(frame, str):
                    raise FeedgateError(ErrorCode.INVALID_MESSAGE, "server sent a text frame")
                self._dispatch(pb.ServerMessage.FromString(frame))
        except ConnectionClosed:
            pass
        except Exception as err:  # a frame this client cannot read: the stream is not trusted
            failure = (
                err
                if isinstance(err, FeedgateError)
                else FeedgateError(ErrorCode.INVALID_MESSAGE, f"undecodable server message: {err}")
            )
            log.error("closing the connection: %s", failure)
            await self._ws.close(1002, "undecodable server message")
        self._shut(failure)

    def _dispatch(self, message: pb.ServerMessage) -> None:
        kind = message.WhichOneof("message")
        if kind == "response":
            future = self._pending.get(message.response.request_id)
            if future is not None and not future.done():
                future.set_result(message.response)
            elif message.response.WhichOneof("result") == "error":
                log.warning("error for an unknown request: %s", message.response.error.message)
        elif kind == "event":
            event = message.event
            subscription = self._subscriptions.get(event.subscription_id)
            if subscription is None:
                return  # ended here already (overflow); the server's Unsubscribed is on its way
            if event.WhichOneof("body") == "closed":
                self._end(subscription, FeedgateError.from_pb(event.closed.error))
                return
            try:
                subscription._deliver(event)
            except Exception as err:  # the subscriber's callback: end that subscription only
                log.exception("on_event callback of subscription %d raised", subscription.id)
                self._fail(subscription, ErrorCode.INTERNAL, f"the on_event callback raised {err!r}")

    def _shut(self, failure: FeedgateError | None) -> None:
        closed = failure or ConnectionClosedError(self._ws.close_code, self._ws.close_reason or "")
        self._closed = closed
        for future in self._pending.values():
            if not future.done():
                future.set_exception(closed)
        for subscription in list(self._subscriptions.values()):
            self._end(subscription, None if self._closing and failure is None else closed)


class _Connecting:
    """What `connect()` returns: await it for a `Client`, or use it with `async with`."""

    def __init__(self, url: str, token: str, client_name: str, options: dict[str, Any]) -> None:
        self._url = url
        self._token = token
        self._client_name = client_name
        self._options = options
        self._client: Client | None = None

    async def _open(self) -> Client:
        queue_size = self._options.pop("queue_size", DEFAULT_QUEUE_SIZE)
        self._options.setdefault("max_size", DEFAULT_MAX_MESSAGE_SIZE)
        self._options.setdefault("compression", None)
        ws = await ws_connect(self._url, **self._options)
        client = Client(ws, queue_size=queue_size)
        try:
            await client.hello(self._token, self._client_name)
        except BaseException:
            await client.close()
            raise
        return client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._open()
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()


def connect(
    url: str, *, token: str = "", client_name: str = "", **options: Any
) -> _Connecting:
    """Opens a connection to `ws://host:port/v1/ws` and says `Hello` (with `token`, when the
    server requires one). `options` go to `websockets.connect` (e.g. `open_timeout`), plus
    `queue_size`, the per-subscription event queue bound (default 10,000)."""
    return _Connecting(url, token, client_name, dict(options))
