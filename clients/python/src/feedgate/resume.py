"""Resuming subscriptions on a new connection: a `Subscribe` with the same id from each one's
last cursor, and what follows a refusal.

After a reconnect the client hands every open subscription to a `Resumer`. A subscription with
no cursor ends with a client-made `RESUME_UNAVAILABLE` (subscribing from "now" would be a silent
gap); a refusal for good ends it with the server's error; a retryable refusal (SOURCE_UNAVAILABLE
while a restarted server connects to its database) is tried again on the same connection after
`max(retry_after_ms, backoff)`. Not here: dialling and the connection state (`client.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from .connection import Connection
from .errors import ConnectionClosedError, FeedgateError
from .reconnect import ReconnectOptions
from .subscription import Subscription
from .v1 import feedgate_pb2 as pb

log = logging.getLogger("feedgate")

#: Ends a subscription with an error (the client's `_end`).
Ender = Callable[[Subscription, FeedgateError], None]


class Resumer:
    """Resumes subscriptions, and keeps the retries of refused ones until `cancel()`."""

    def __init__(self, end: Ender, options: ReconnectOptions) -> None:
        self._end = end
        self._options = options
        #: Refused resumes waiting to be tried again; each stops with its connection.
        self._retries: set[asyncio.Task[None]] = set()

    async def resume(self, connection: Connection, subscriptions: Iterable[Subscription]) -> None:
        """Resumes `subscriptions` on `connection`, in id order, pipelined; returns once each
        has been answered. Raises `ConnectionClosedError` when the connection ends meanwhile
        (the next connection resumes them all)."""
        sent: list[tuple[Subscription, asyncio.Future[pb.Response]]] = []
        for subscription in sorted(subscriptions, key=lambda s: s.id):
            if subscription.closed:
                continue
            request = subscription._resume_request()
            if request is None:
                self._end(subscription, subscription._no_position())
                continue
            subscription._connection = connection
            sent.append((subscription, await connection.send({"subscribe": request})))
        answers = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        for (subscription, _), answer in zip(sent, answers):
            if isinstance(answer, BaseException):
                raise answer
            try:
                Connection.result(answer)
            except FeedgateError as err:
                self._refused(connection, subscription, err)

    def cancel(self) -> None:
        """Stops every pending retry (the client is closed)."""
        for task in self._retries:
            task.cancel()

    def _refused(
        self, connection: Connection, subscription: Subscription, error: FeedgateError
    ) -> None:
        if not error.retryable:  # RESUME_UNAVAILABLE, NOT_FOUND, PERMISSION_DENIED, ...
            self._end(subscription, error)
            return
        log.info("resuming subscription %d: %s", subscription.id, error)
        task = asyncio.create_task(self._retry(connection, subscription, error))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _retry(
        self, connection: Connection, subscription: Subscription, error: FeedgateError
    ) -> None:
        """Tries a refused resume again on the same connection until it is answered for good.
        Stops when the connection ends: the next one resumes the subscription anyway. Refused
        `max_attempts` times in a row (when set), it ends with the last refusal."""
        max_attempts = self._options.max_attempts
        refusals = 1
        while max_attempts is None or refusals < max_attempts:
            backoff = self._options.delay(refusals - 1)
            await asyncio.sleep(max(error.retry_after_ms / 1000, backoff))
            request = subscription._resume_request()
            if subscription.closed or connection.lost is not None or request is None:
                return
            try:
                await connection.request({"subscribe": request})
                return
            except ConnectionClosedError:
                return
            except FeedgateError as err:
                error = err
                if not err.retryable:
                    break
                log.info("resuming subscription %d: %s", subscription.id, err)
                refusals += 1
        self._end(subscription, error)
