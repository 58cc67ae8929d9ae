"""One WebSocket connection: opening it (socket and `Hello`), its reader task, and the requests
waiting for a response on it.

A `Connection` lives exactly as long as its socket. Responses resolve the future of the request
with the same `request_id`; events go to the callback the client gave (the client routes them to
subscriptions, which outlive connections). When the socket ends, every request still waiting on
it fails with the reason (`lost`), first running the hook each request left for that moment, so
that the client's view of the server's subscriptions is right before anyone reconnects. Knows
nothing of reconnecting: `client.py` decides that.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from .errors import ConnectionClosedError, ErrorCode, FeedgateError
from .reconnect import TokenSource, resolve_token
from .v1 import feedgate_pb2 as pb

log = logging.getLogger("feedgate")

EventRouter = Callable[[pb.Event], None]


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom every connection of a client is made."""

    url: str
    token: TokenSource
    client_name: str
    #: Passed to `websockets.connect` for every connection.
    ws_options: dict[str, Any] = field(default_factory=dict)


async def dial(endpoint: Endpoint, route: EventRouter) -> tuple[Connection, pb.Welcome]:
    """A new connection, its reader running, with `Hello` answered on it (the token asked of
    `endpoint.token` now). Raises what failed; a connection that failed after opening (or
    whose caller was cancelled meanwhile) is closed first."""
    token = await resolve_token(endpoint.token)
    ws = await ws_connect(endpoint.url, **endpoint.ws_options)
    connection = Connection(ws, route)
    try:
        hello = pb.Hello(
            protocol_version=1, token=token, client_name=endpoint.client_name, bundles=True
        )
        return connection, (await connection.request({"hello": hello})).welcome
    except BaseException:
        if connection.lost is None:
            await connection.close()
        raise


@dataclass
class _Pending:
    """A request sent on this connection and not answered yet."""

    future: asyncio.Future[pb.Response]
    #: Run when the connection ends before the response arrives (before the future fails):
    #: what the request would have changed on the server is known to be undone.
    on_lost: Callable[[], None] | None


class Connection:
    """A WebSocket to the server, read by its own task."""

    def __init__(self, ws: ClientConnection, route: EventRouter) -> None:
        self.ws = ws
        #: Why the connection ended; None while it is up.
        self.lost: FeedgateError | None = None
        self._route = route
        self._request_ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        #: Ends when the socket does; its result is `lost`.
        self.reader: asyncio.Task[FeedgateError] = asyncio.create_task(
            self._read_loop(), name="feedgate-reader"
        )

    async def request(
        self, command: dict[str, Any], on_lost: Callable[[], None] | None = None
    ) -> pb.Response:
        """Sends a request and returns its successful `Response`; raises its `Error` as
        `FeedgateError`, and the connection's end as `ConnectionClosedError`."""
        future = await self.send(command, on_lost)
        return self.result(await future)

    async def send(
        self, command: dict[str, Any], on_lost: Callable[[], None] | None = None
    ) -> asyncio.Future[pb.Response]:
        """Sends a request without waiting for its response (pipelining); await the returned
        future (it fails with `lost` if the connection ends first), then pass its value through
        `result()`. Raises `lost` when the connection has already ended: nothing was sent."""
        if self.lost is not None:
            raise self.lost
        request_id = next(self._request_ids)
        future: asyncio.Future[pb.Response] = asyncio.get_running_loop().create_future()
        # Registered before the frame leaves, and while `lost` is None: the reader either
        # resolves this future or fails it when the socket ends.
        self._pending[request_id] = _Pending(future, on_lost)
        future.add_done_callback(lambda _: self._pending.pop(request_id, None))
        # Whoever stops waiting for it (a resume abandoned mid-way) leaves no "exception was
        # never retrieved" behind: the failure is the connection's, reported elsewhere.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await self.ws.send(pb.Request(request_id=request_id, **command).SerializeToString())
        except ConnectionClosed:
            pass  # the reader sees the same end and fails the future with it
        except BaseException:
            future.cancel()
            raise
        return future

    @staticmethod
    def result(response: pb.Response) -> pb.Response:
        """A response when it is a success; its `Error` raised as `FeedgateError` otherwise."""
        if response.WhichOneof("result") == "error":
            raise FeedgateError.from_pb(response.error)
        return response

    async def close(self, code: int = 1000, reason: str = "") -> FeedgateError:
        """Closes the socket (the closing handshake, bounded by websockets' `close_timeout`)
        and waits for the reader; returns `lost`."""
        await self.ws.close(code, reason)
        return await asyncio.shield(self.reader)

    async def _read_loop(self) -> FeedgateError:
        failure: FeedgateError | None = None
        try:
            async for frame in self.ws:
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
            await self.ws.close(1002, "undecodable server message")
        lost = failure or ConnectionClosedError(self.ws.close_code, self.ws.close_reason or "")
        self._lose(lost)
        return lost

    def _dispatch(self, message: pb.ServerMessage) -> None:
        kind = message.WhichOneof("message")
        if kind == "response":
            pending = self._pending.get(message.response.request_id)
            if pending is not None and not pending.future.done():
                pending.future.set_result(message.response)
            elif message.response.WhichOneof("result") == "error":
                log.warning("error for an unknown request: %s", message.response.error.message)
        elif kind == "event":
            self._route(message.event)
        elif kind == "bundle":  # several messages in one frame (Hello.bundles), in order
            for inner in message.bundle.messages:
                self._dispatch(inner)

    def _lose(self, error: FeedgateError) -> None:
        self.lost = error
        pending = list(self._pending.values())
        self._pending.clear()
        for request in pending:
            if request.on_lost is not None:
                request.on_lost()
        for request in pending:
            if not request.future.done():
                request.future.set_exception(error)
