"""The asyncio client: requests correlated by `request_id`, events routed to subscriptions by
`subscription_id`, over a connection that the client replaces by itself when it drops.

Each WebSocket is a `Connection` (connection.py: the socket, `Hello`, its reader task).
Subscriptions (subscription.py) outlive connections. One more task, the supervisor, waits for
the current connection to end and then either closes the client for good or reconnects: backoff
and the rules on what is final (reconnect.py), a new connection with the current token, and
every open subscription resumed from its last cursor (resume.py), before the state (state.py) is
`open` again and waiting requests go out. The protocol is described in docs/protocol.md; the
reconnect rules in the README's "Reconnecting" section.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from typing import Any

from .connection import Connection, Endpoint, dial
from .errors import ConnectionClosedError, ErrorCode, FeedgateError
from .filters import Filter
from .reconnect import ReconnectOptions, TokenSource, reconnect_options, reconnects_after
from .resume import Resumer
from .state import ConnectionState, StateCallback, StateSignal
from .subscription import EventCallback, Subscription
from .v1 import feedgate_pb2 as pb
from .view import ChangeCallback, MaterializedView, ResetCallback, materialized_view

log = logging.getLogger("feedgate")

#: Events an `async for` subscription holds before its consumer reads them. When it is full the
#: client ends that subscription with `FeedgateError(SLOW_CONSUMER)` (raised once the events
#: already queued have been read) and unsubscribes it on the server: nothing is dropped silently,
#: and one slow iterator never stalls the other subscriptions on the connection.
DEFAULT_QUEUE_SIZE = 10_000

#: Largest server message accepted (a row with big values can be large). A larger one closes
#: the connection with 1009.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class Client:
    """A connection to a feedgate server that reconnects by itself. Create it with
    `await feedgate.connect(url)` or `async with feedgate.connect(url) as client:`."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        queue_size: int,
        reconnect: ReconnectOptions | None,
        on_state_change: StateCallback | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._queue_size = queue_size
        self._reconnect = reconnect
        self._subscription_ids = itertools.count(1)
        self._subscriptions: dict[int, Subscription] = {}
        #: The newest connection that reached `Welcome` (lost while reconnecting).
        self._connection: Connection | None = None
        self._signal = StateSignal(on_state_change)
        #: Why requests fail now that the client is closed; None until then.
        self._closed: FeedgateError | None = None
        self._closing = False
        #: Set by `close()`: cuts a backoff wait short.
        self._close_requested = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        #: Resumes subscriptions on every new connection.
        self._resumer = Resumer(self._end, reconnect or ReconnectOptions())
        #: The server's `Welcome` (session id, server version, limits), from the newest
        #: connection.
        self.welcome: pb.Welcome | None = None

    @property
    def state(self) -> ConnectionState:
        """The connection state: "connecting", "open", "reconnecting" or "closed"."""
        return self._signal.state

    def on_state_change(self, callback: StateCallback) -> Callable[[], None]:
        """Calls `callback(state, error)` on every state change (see `ConnectionState`);
        returns a function that removes it."""
        return self._signal.add(callback)

    # ----------------------------------------------------------------------------------------
    # Commands
    # ----------------------------------------------------------------------------------------

    async def hello(self, token: str = "", client_name: str = "") -> pb.Welcome:
        """Sends `Hello` (protocol version 1, the token if any) and returns the `Welcome`. The
        client says `Hello` on every connection by itself; this sends one more."""
        response = await self._request(
            hello=pb.Hello(
                protocol_version=1, token=token, client_name=client_name, bundles=True
            )
        )
        self.welcome = response.welcome
        return response.welcome

    async def subscribe_table(
        self,
        table: str,
        *,
        include_initial: bool = False,
        filter: Filter | None = None,
        columns: Sequence[str] = (),
        min_interval_ms: int = 0,
        resume_from: bytes = b"",
        on_event: EventCallback | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Subscribes to a PostgreSQL table's changes ("schema.table" or "table"). With
        `include_initial`, every existing row arrives as an INITIAL change before `Ready`. With
        a `filter` (`feedgate.col(...)`), only matching rows: rows moving into it arrive as
        INSERTs, out of it as DELETEs. With `columns`, rows carry only those (and the primary
        key's), and updates that change none of them are not sent. With `min_interval_ms`
        (1 to 60,000), at most one event per row per interval: a row's changes within it
        collapse into one, delivered with the interval's others as one batch."""
        feed = pb.TableFeed(
            table=table,
            include_initial=include_initial,
            columns=list(columns),
            min_interval_ms=min_interval_ms,
        )
        if filter is not None:
            feed.filter.CopyFrom(filter.message)
        return await self._subscribe({"table": feed}, resume_from, on_event, queue_size)

    async def subscribe_topic(
        self,
        topic: str,
        *,
        start: str | int = "latest",
        filter: Filter | None = None,
        min_interval_ms: int = 0,
        resume_from: bytes = b"",
        on_event: EventCallback | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Subscribes to a topic. `start`: "latest" (what is published after this returns),
        "earliest", or an int offset (Kafka and in-process topics serve all three, in-process
        ones from the messages the server still keeps; RabbitMQ topics only "latest"). With
        `min_interval_ms` (1 to 60,000), at most one message per key per interval (the
        latest; messages without a key are all kept), delivered as one batch per interval."""
        feed = pb.TopicFeed(topic=topic, min_interval_ms=min_interval_ms)
        if filter is not None:  # feedgate.path(...), key(), header(...)
            feed.filter.CopyFrom(filter.message)
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
        carries its `offset` and `cursor`). A str payload is sent as UTF-8. Never re-sent by
        the client: when the connection drops before the answer, this raises a retryable
        `ConnectionClosedError` and the message may or may not have been accepted."""
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
        self,
        table: str,
        *,
        filter: Filter | None = None,
        columns: Sequence[str] = (),
        min_interval_ms: int = 0,
        on_change: ChangeCallback | None = None,
        on_reset: ResetCallback | None = None,
    ) -> MaterializedView:
        """A live dict of `table`'s rows keyed by primary key (with a `filter`: exactly the
        matching rows; with `min_interval_ms`, updated at most once per row per interval; see
        `feedgate.view`); await `view.wait_ready()` before reading it."""
        return await materialized_view(
            self,
            table,
            filter=filter,
            columns=columns,
            min_interval_ms=min_interval_ms,
            on_change=on_change,
            on_reset=on_reset,
        )

    async def authenticate(self, token: str) -> pb.Authenticated:
        """Authenticates with `token`, or refreshes the connection's token before it expires (same
        user and tenant); returns who the connection is and until when. A refused token raises
        `FeedgateError` (UNAUTHENTICATED) and changes nothing. Lasts as long as the connection:
        a reconnect says `Hello` with `connect(token=...)`, so pass a function there to keep
        tokens fresh across reconnects."""
        return (await self._request(authenticate=pb.Authenticate(token=token))).authenticated

    async def catalog(self) -> pb.Catalog:
        """What this connection may subscribe to: the watched tables (name, columns with their
        PostgreSQL type and `Value` kind, primary key) and the topic routes (pattern, backend,
        whether history and resume are available, whether it may publish), as its permissions
        allow. `catalog.HasField("tables_error")` when the tables could not be listed."""
        return (await self._request(get_catalog=pb.GetCatalog())).catalog

    async def ping(self) -> int:
        """A round trip; returns the server's clock in microseconds since the Unix epoch. Every
        event queued for this client before the ping has arrived when it returns."""
        return (await self._request(ping=pb.Ping())).pong.server_time_micros

    async def close(self) -> None:
        """Closes the client for good. Open subscriptions end (iteration stops without an
        error); pending and waiting requests fail with `ConnectionClosedError`."""
        if self._closed is None and not self._closing:
            self._closing = True
            self._close_requested.set()
            connection = self._connection
            if connection is not None and connection.lost is None:
                await connection.close()
            if self.state == "reconnecting" and self._supervisor is not None:
                self._supervisor.cancel()  # it may be dialling: nothing else stops that
        if self._supervisor is not None:
            await asyncio.wait({self._supervisor})

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ----------------------------------------------------------------------------------------
    # Requests and subscriptions
    # ----------------------------------------------------------------------------------------

    async def _open_connection(self) -> Connection:
        """The connection to send on, once the state is `open`; raises the client's end
        instead when it closes. Returns with the connection up: the caller registers its
        request before awaiting anything, so the connection's end cannot miss it."""
        while True:
            if self._closed is not None:
                raise self._closed
            connection = self._connection
            if self.state == "open" and connection is not None and connection.lost is None:
                return connection
            await self._signal.changed()

    async def _request(self, **command: Any) -> pb.Response:
        connection = await self._open_connection()
        return await connection.request(command)

    async def _subscribe(
        self,
        feed: dict[str, Any],
        resume_from: bytes,
        on_event: EventCallback | None,
        queue_size: int | None,
    ) -> Subscription:
        connection = await self._open_connection()
        sub_id = next(self._subscription_ids)
        subscription = Subscription(
            self, sub_id, feed, resume_from, on_event, queue_size or self._queue_size
        )
        # Registered before the request leaves: events can follow `Subscribed` at once.
        self._subscriptions[sub_id] = subscription
        subscription._connection = connection
        try:
            await connection.request(
                {"subscribe": subscription._first_request()},
                # Not subscribed, as far as the next connection is concerned: the caller gets
                # the error and decides.
                on_lost=lambda: self._end(subscription, None),
            )
        except BaseException:
            self._end(subscription, None)
            raise
        return subscription

    def _route(self, event: pb.Event) -> None:
        """An event from the current connection, to its subscription."""
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

    def _end(self, subscription: Subscription, error: FeedgateError | None) -> None:
        if self._subscriptions.get(subscription.id) is subscription:
            del self._subscriptions[subscription.id]
        if not subscription.closed:
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
        connection = subscription._connection
        if connection is not None and connection.lost is None:
            self._spawn(self._unsubscribe_quietly(connection, subscription.id))

    async def _unsubscribe_quietly(self, connection: Connection, subscription_id: int) -> None:
        try:
            await connection.request(
                {"unsubscribe": pb.Unsubscribe(subscription_id=subscription_id)}
            )
        except FeedgateError:
            pass

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _backoff(self, attempt: int) -> float:
        return (self._reconnect or ReconnectOptions()).delay(attempt)

    # ----------------------------------------------------------------------------------------
    # Connections: the first one, the supervisor, reconnecting
    # ----------------------------------------------------------------------------------------

    async def _dial(self) -> Connection:
        """A new connection with `Hello` answered on it, made the client's."""
        connection, self.welcome = await dial(self._endpoint, self._route)
        self._connection = connection
        return connection

    async def _connect_first(self) -> None:
        """Opens the first connection; raises (and leaves the client closed) when that fails:
        the first connection is not retried."""
        self._signal.announce("connecting", None)
        try:
            await self._dial()
        except BaseException as err:
            self._closing = True
            self._shut(err if isinstance(err, FeedgateError) else None)
            raise
        self._signal.set("open", None)
        self._supervisor = asyncio.create_task(self._supervise(), name="feedgate-supervisor")

    async def _supervise(self) -> None:
        """For the client's life after its first connection: waits for each connection's end,
        then reconnects or closes the client."""
        error: FeedgateError | None = None
        try:
            while True:
                connection = self._connection
                assert connection is not None  # set by _dial before the supervisor starts
                error = await asyncio.shield(connection.reader)
                if self._closing or self._reconnect is None or not reconnects_after(error):
                    break
                # The reader ends with a ConnectionClosedError, or INVALID_MESSAGE (final).
                assert isinstance(error, ConnectionClosedError)
                self._signal.set("reconnecting", error)
                error = await self._reconnect_until_open(self._reconnect, error)
                if error is not None:
                    break
        except asyncio.CancelledError:
            # close() while reconnecting. Ends here: this task is the client's own.
            connection = self._connection
            if connection is not None and connection.lost is None:
                connection.ws.transport.abort()
        self._shut(None if self._closing else error)

    async def _reconnect_until_open(
        self, options: ReconnectOptions, cause: ConnectionClosedError
    ) -> FeedgateError | None:
        """Dials until a connection is open with every subscription resumed (returns None), or
        returns why the client closes instead: a refusal that retrying cannot fix, or
        `max_attempts` failed attempts in a row (or `close()`)."""
        attempt = 0
        last: BaseException = cause
        while options.max_attempts is None or attempt < options.max_attempts:
            try:
                await asyncio.wait_for(self._close_requested.wait(), options.delay(attempt))
            except asyncio.TimeoutError:
                pass
            if self._closing:
                return cause
            attempt += 1
            try:
                connection = await self._dial()
                await self._resumer.resume(connection, list(self._subscriptions.values()))
            except Exception as err:  # refused, timed out, the token function failed, ...
                if self._closing:
                    return cause
                if isinstance(err, FeedgateError) and not reconnects_after(err):
                    log.warning("reconnecting stopped: %s", err)  # e.g. the token is refused
                    return err
                log.info("reconnect attempt %d failed: %r", attempt, err)
                last = err
                continue
            self._signal.set("open", None)
            return None
        return ConnectionClosedError(
            cause.close_code, f"gave up reconnecting after {attempt} attempts; the last: {last}"
        )

    # ----------------------------------------------------------------------------------------
    # Closing for good
    # ----------------------------------------------------------------------------------------

    def _shut(self, error: FeedgateError | None) -> None:
        """The client is closed for good: `error` is why, None after the application's
        `close()`. Subscriptions end with it, waiting requests raise it."""
        connection = self._connection
        closed = error or (connection.lost if connection is not None else None)
        self._closed = closed or ConnectionClosedError(None, "the client was closed")
        for subscription in sorted(self._subscriptions.values(), key=lambda s: s.id):
            self._end(subscription, error)
        self._resumer.cancel()
        self._signal.set("closed", error)


class _Connecting:
    """What `connect()` returns: await it for a `Client`, or use it with `async with`."""

    def __init__(
        self,
        endpoint: Endpoint,
        queue_size: int,
        reconnect: ReconnectOptions | None,
        on_state_change: StateCallback | None,
    ) -> None:
        self._endpoint = endpoint
        self._queue_size = queue_size
        self._reconnect = reconnect
        self._on_state_change = on_state_change
        self._client: Client | None = None

    async def _open(self) -> Client:
        client = Client(
            self._endpoint,
            queue_size=self._queue_size,
            reconnect=self._reconnect,
            on_state_change=self._on_state_change,
        )
        await client._connect_first()
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
    url: str,
    *,
    token: TokenSource = "",
    client_name: str = "",
    reconnect: bool | ReconnectOptions = True,
    on_state_change: StateCallback | None = None,
    **options: Any,
) -> _Connecting:
    """Opens a connection to `ws://host:port/v1/ws` and says `Hello` (with `token`, when the
    server requires one). The first connection is not retried: this raises when it fails.

    `token`: a string, or a function returning one (or an awaitable of one), called before every
    connection's `Hello`. `reconnect`: True (the default: `ReconnectOptions()`), False (a dropped
    connection closes the client) or `ReconnectOptions(...)`. `on_state_change(state, error)`:
    see `Client.on_state_change`. `options` go to `websockets.connect` (e.g. `open_timeout`),
    plus `queue_size`, the per-subscription event queue bound (default 10,000)."""
    queue_size = options.pop("queue_size", DEFAULT_QUEUE_SIZE)
    options.setdefault("max_size", DEFAULT_MAX_MESSAGE_SIZE)
    options.setdefault("compression", None)
    endpoint = Endpoint(url, token, client_name, options)
    return _Connecting(endpoint, queue_size, reconnect_options(reconnect), on_state_change)
