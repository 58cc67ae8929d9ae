"""Errors raised by the client: one exception type that carries the protocol's error code.

Every failure the server reports arrives as an `Error { code, message, retryable, retry_after_ms,
details }` (in a `Response`, or in `SubscriptionClosed` when the server ends a subscription);
`FeedgateError` carries all of it. A lost connection raises `ConnectionClosedError`, a
`FeedgateError` whose code is derived from the WebSocket close code.
"""

from __future__ import annotations

import enum
from typing import Mapping

from .v1 import feedgate_pb2 as pb

#: The protocol's error codes without the `ERROR_CODE_` prefix: `ErrorCode.NOT_FOUND == 6`.
#: Built from the generated enum, so it never lags behind the schema.
ErrorCode = enum.IntEnum(  # type: ignore[misc]
    "ErrorCode",
    {name.removeprefix("ERROR_CODE_"): number for name, number in pb.ErrorCode.items()},
)


def code_name(code: int) -> str:
    """`6` -> `"NOT_FOUND"`; an unknown (newer) code -> `"UNKNOWN_<n>"`."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


class FeedgateError(Exception):
    """A coded error from the server (or, for a few client-side conditions, from this client)."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        retryable: bool = False,
        retry_after_ms: int = 0,
        details: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code_name(code)}: {message}")
        #: The protocol's `ErrorCode` number; compare with `ErrorCode.<NAME>`.
        self.code = code
        #: Human-readable explanation, as the server wrote it.
        self.message = message
        #: Whether the same request may succeed later.
        self.retryable = retryable
        #: When retryable: wait at least this long first (0: no advice).
        self.retry_after_ms = retry_after_ms
        #: Machine-readable context, e.g. {"limit": "128"}.
        self.details = dict(details or {})

    @property
    def code_name(self) -> str:
        """The code's name without the `ERROR_CODE_` prefix, e.g. `"NOT_FOUND"`."""
        return code_name(self.code)

    @classmethod
    def from_pb(cls, error: pb.Error) -> FeedgateError:
        return cls(
            error.code,
            error.message,
            retryable=error.retryable,
            retry_after_ms=error.retry_after_ms,
            details=error.details,
        )


# WebSocket close codes the server uses, and the protocol error each one means.
_CLOSE_CODES = {
    1001: (ErrorCode.SHUTTING_DOWN, True),
    1009: (ErrorCode.LIMIT_EXCEEDED, False),
    4000: (ErrorCode.IDLE_TIMEOUT, True),
    4001: (ErrorCode.UNAUTHENTICATED, False),
    4008: (ErrorCode.SLOW_CONSUMER, True),
    4029: (ErrorCode.LIMIT_EXCEEDED, True),
}


class ConnectionClosedError(FeedgateError):
    """The connection ended; pending requests and open subscriptions fail with this.

    `close_code` is the WebSocket close code (None when the connection dropped without a close
    frame); `code` is the matching protocol error code: 1001 SHUTTING_DOWN, 4000 IDLE_TIMEOUT,
    4008 SLOW_CONSUMER, 4029 LIMIT_EXCEEDED (these four are `retryable`: reconnect and subscribe
    again), 4001 UNAUTHENTICATED (a bad, missing or expired token: get a new one), 1009
    LIMIT_EXCEEDED, anything else UNSPECIFIED.
    """

    def __init__(self, close_code: int | None, reason: str) -> None:
        code, retryable = _CLOSE_CODES.get(close_code or 0, (ErrorCode.UNSPECIFIED, True))
        super().__init__(
            code,
            f"connection closed (close code {close_code}): {reason or 'no reason given'}",
            retryable=retryable,
        )
        self.close_code = close_code
        self.reason = reason
