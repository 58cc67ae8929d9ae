"""When and how the client reconnects: the backoff schedule, which ends of a connection are final,
and where a token comes from.

Pure decisions, no sockets and no tasks: `client.py` drives the connections and asks this module
how long to wait and whether to try again. The design is shared with the TypeScript client
(same options, same states, same rules); the README's "Reconnecting" section describes it.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .errors import ConnectionClosedError, ErrorCode, FeedgateError

#: A token, or a function returning one (or an awaitable of one), called before every
#: connection's `Hello` so that a reconnect can carry a fresh token.
TokenSource = str | Callable[[], str | Awaitable[str]]

#: WebSocket close codes after which reconnecting cannot help, so the client closes for good:
#: 4001 (the token was refused or expired: the application must act), 1002 (a protocol error,
#: a bug on one side) and 1009 (a frame too big for the server: resending it would fail again).
FINAL_CLOSE_CODES = frozenset({1002, 1009, 4001})

#: Errors other than a close after which another attempt cannot help: the server refused the
#: `Hello`'s token (like close code 4001) or does not speak this protocol version, or this client
#: could not decode a frame (the stream can no longer be trusted; it closed the connection).
FINAL_ERROR_CODES = frozenset(
    {ErrorCode.UNAUTHENTICATED, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION, ErrorCode.INVALID_MESSAGE}
)


@dataclass(frozen=True)
class ReconnectOptions:
    """How the client retries a dropped connection: before attempt n (0, 1, ...) it waits a
    uniformly random time in [d/2, d] with d = min(max_delay, initial_delay * multiplier**n)
    ("equal jitter": never all clients of a restarted server at once, never much sooner than
    planned). n starts again at 0 once a connection is open."""

    #: Seconds; the ceiling of the first wait.
    initial_delay: float = 0.1
    #: Seconds; the ceiling of every wait.
    max_delay: float = 10.0
    #: How much the ceiling grows per failed attempt.
    multiplier: float = 2.0
    #: Failed attempts in a row after which the client closes; None: never gives up.
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ValueError("need 0 <= initial_delay <= max_delay")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None: unlimited)")

    def delay(self, attempt: int, uniform: Callable[[], float] = random.random) -> float:
        """Seconds to wait before attempt `attempt` (0-based)."""
        try:
            ceiling = min(self.max_delay, self.initial_delay * self.multiplier**attempt)
        except OverflowError:
            ceiling = self.max_delay
        return ceiling / 2 + uniform() * ceiling / 2


def reconnect_options(value: bool | ReconnectOptions) -> ReconnectOptions | None:
    """`connect(reconnect=...)`'s value as options; None when reconnecting is off."""
    if value is True:
        return ReconnectOptions()
    if value is False:
        return None
    if isinstance(value, ReconnectOptions):
        return value
    raise TypeError(f"reconnect must be True, False or ReconnectOptions, not {value!r}")


def reconnects_after(error: BaseException) -> bool:
    """Whether a connection, or an attempt at one, that ended with `error` is worth dialling
    again: a close by the server or the network except the final close codes, a `Hello`
    answered with an error that is not final (a connection limit, say: the server may not have
    noticed yet that the old connection is gone), a refused TCP connect, a token function that
    failed. False for the final close codes and errors above."""
    if isinstance(error, ConnectionClosedError):
        return error.close_code not in FINAL_CLOSE_CODES
    if isinstance(error, FeedgateError):
        return error.code not in FINAL_ERROR_CODES
    return True


async def resolve_token(source: TokenSource) -> str:
    """The token to send now."""
    if isinstance(source, str):
        return source
    token = source()
    if inspect.isawaitable(token):
        token = await token
    if not isinstance(token, str):
        raise TypeError(f"the token function returned {type(token).__name__}, not str")
    return token
