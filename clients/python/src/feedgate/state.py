"""The client's connection state and its signal: the current state, the application's callbacks,
and what requests waiting for an open connection await.

States: `connecting` (the first connection, until its `Welcome`), `open`, `reconnecting` (the
connection dropped; subscriptions wait, requests queue) and `closed` (for good). Deciding the
transitions is the client's business; this module only records and announces them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from .errors import FeedgateError

log = logging.getLogger("feedgate")

#: The client's connection state: `connecting` (the first connection, until its `Welcome`),
#: `open`, `reconnecting` (the connection dropped; subscriptions wait, requests queue) and
#: `closed` (for good: `close()` was called, the server refused the client, or reconnecting gave
#: up).
ConnectionState = Literal["connecting", "open", "reconnecting", "closed"]

#: Called on every state change with the new state and, for `reconnecting` and a `closed` that
#: the application did not ask for, the error that caused it (None otherwise).
StateCallback = Callable[[ConnectionState, FeedgateError | None], None]


class StateSignal:
    """The current state, announced to callbacks on every change."""

    def __init__(self, callback: StateCallback | None) -> None:
        #: The current state.
        self.state: ConnectionState = "connecting"
        self._callbacks: list[StateCallback] = [callback] if callback else []
        #: Set, and replaced by a fresh one, on every change.
        self._changed = asyncio.Event()

    def add(self, callback: StateCallback) -> Callable[[], None]:
        """Calls `callback` on every change from now on; returns a function that removes it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def set(self, state: ConnectionState, error: FeedgateError | None) -> None:
        """Moves to `state` and announces it; nothing when the state is already that."""
        if state == self.state:
            return
        self.state = state
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        self.announce(state, error)

    def announce(self, state: ConnectionState, error: FeedgateError | None) -> None:
        """Calls every callback; one that raises is logged and the others still run."""
        for callback in list(self._callbacks):
            try:
                callback(state, error)
            except Exception:
                log.exception("on_state_change callback raised")

    async def changed(self) -> None:
        """Returns at the next change. Cancel-safe: nothing is consumed."""
        await self._changed.wait()
