"""Assertions on a subscription's events, with deadlines instead of sleeps.

`expect` takes the subscription's next event and checks it; `expect_sequence` the next several,
in order; `expect_nothing` checks that none arrives for a while. They consume what they read
(the next helper, or `async for`, continues after it). READY and STATUS events are passed over
unless a spec asks for one. By default the next data event must be the expected one, so that a
test also asserts that nothing else came first (exactly once, in order); `skip=True` passes over
events that do not match. A helper that fails raises `ExpectationFailed` (an `AssertionError`)
saying what was expected and listing what did arrive, with each difference field by field. Not
here: views (views.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import FeedgateError
from .events import Check, Received, Spec, SpecLike, describe, make_spec, received, spec

if TYPE_CHECKING:
    from ..subscription import Subscription

#: The deadline of a helper not given one, in seconds.
DEFAULT_WITHIN = 5.0


class ExpectationFailed(AssertionError):
    """An expectation on feedgate events did not hold; the message says what arrived."""


class _Watch:
    """One helper call: reads the subscription against a deadline and keeps what it read."""

    def __init__(self, subscription: Subscription, within: float) -> None:
        self.subscription = subscription
        self.within = within
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self.seen: list[Received] = []

    def remaining(self) -> float:
        return self._start + self.within - self._loop.time()

    async def next(self, wait: bool = True) -> Received | None:
        """The next event, or None at the deadline (or at once when `wait` is False). An end
        of the subscription fails the expectation."""
        __tracebackhide__ = True  # pytest: show the test's line, not this one
        try:
            event = await self.subscription._next_within(max(self.remaining(), 0) if wait else 0)
        except FeedgateError as err:
            raise self.fail(f"the subscription ended: {err}") from err
        if event is None:
            if self.subscription.closed:
                raise self.fail("the subscription ended (unsubscribed or client closed)")
            return None
        got = received(event, self._loop.time() - self._start)
        self.seen.append(got)
        return got

    def fail(self, headline: str, details: Sequence[str] = ()) -> ExpectationFailed:
        lines = [f"{self.name()}: {headline}", *details]
        lines.append(f"arrived within {self.within} s ({len(self.seen)} events):")
        lines += [f"  +{got.at:.3f} s  {describe(got)}" for got in self.seen] or ["  (nothing)"]
        return ExpectationFailed("\n".join(lines))

    def name(self) -> str:
        feed = self.subscription._feed
        source = (
            f"table {feed['table'].table}" if "table" in feed else f"topic {feed['topic'].topic}"
        )
        return f"subscription {self.subscription.id} ({source})"


def _wanted(want: Spec, got: Received) -> bool:
    """Whether `got` is to be compared with `want` (control events only when asked for)."""
    return got.is_data or want.wants_control


async def expect(
    subscription: Subscription,
    kind: str | None = None,
    *,
    where: dict[str, Check] | None = None,
    old: dict[str, Check] | None = None,
    key: Check | None = None,
    payload: Check | None = None,
    within: float = DEFAULT_WITHIN,
    skip: bool = False,
) -> Received:
    """Waits at most `within` seconds for the subscription's next event and asserts that it is
    `kind` ("INSERT", "UPDATE", "DELETE", "INITIAL", "MESSAGE"; "READY", "STATUS") with
    `where`'s fields (the new row, a delete's old row, or a message's JSON payload), `old`'s
    (the old row), `key` and `payload`; a field's value may be a function that says whether
    the arrived value is right. Returns the event. With `skip`, events that do not match are
    passed over (and listed if none does)."""
    __tracebackhide__ = True
    want = make_spec(kind, where=where, old=old, key=key, payload=payload)
    watch = _Watch(subscription, within)
    while True:
        got = await watch.next()
        if got is None:
            raise watch.fail(
                f"expected {want}: {_none_matched(watch, want)}", _closest(watch, want)
            )
        if not _wanted(want, got):
            continue
        mismatches = want.mismatches(got)
        if not mismatches:
            return got
        if not skip:
            raise watch.fail(
                f"expected {want}, but the next event was {describe(got)}",
                [f"  {line}" for line in mismatches],
            )


def _none_matched(watch: _Watch, want: Spec) -> str:
    data = [got for got in watch.seen if _wanted(want, got)]
    return "nothing arrived" if not data else f"none of the {len(data)} events matched"


def _closest(watch: _Watch, want: Spec) -> list[str]:
    """The differences of the arrived event that came nearest to `want`."""
    scored = [(len(want.mismatches(got)), i, got) for i, got in enumerate(watch.seen)]
    scored = [s for s in scored if _wanted(want, s[2])]
    if not scored:
        return []
    _, _, best = min(scored, key=lambda s: (s[0], s[1]))
    return [f"closest: {describe(best)}", *(f"  {line}" for line in want.mismatches(best))]


async def expect_sequence(
    subscription: Subscription,
    events: Sequence[SpecLike],
    *,
    within: float = DEFAULT_WITHIN,
    skip: bool = False,
) -> list[Received]:
    """Asserts that the subscription's next events are `events`, in this order, all within
    `within` seconds. Each is a kind ("INSERT"), a (kind, where) pair, a mapping of `expect`'s
    arguments ({"kind": "UPDATE", "where": {...}, "old": {...}}) or a `Spec`. Without `skip`
    nothing else may come in between. Returns the matched events."""
    __tracebackhide__ = True
    wants = [spec(item) for item in events]
    watch = _Watch(subscription, within)
    matched: list[Received] = []
    while len(matched) < len(wants):
        want = wants[len(matched)]
        got = await watch.next()
        if got is None:
            raise watch.fail(
                f"expected {len(wants)} events in order, {len(matched)} arrived",
                _sequence_table(wants, matched, None),
            )
        if not _wanted(want, got):
            continue
        if not want.mismatches(got):
            matched.append(got)
        elif not skip:
            raise watch.fail(
                f"expected {len(wants)} events in order; event {len(matched) + 1} differs",
                _sequence_table(wants, matched, got),
            )
    return matched


def _sequence_table(
    wants: list[Spec], matched: list[Received], wrong: Received | None
) -> list[str]:
    lines = []
    for i, want in enumerate(wants):
        if i < len(matched):
            lines += [f"  {i + 1}. ok  {want}", f"         got {describe(matched[i])}"]
        elif i == len(matched):
            lines.append(f"  {i + 1}. NO  {want}")
            if wrong is None:
                lines.append("         got nothing")
            else:
                lines.append(f"         got {describe(wrong)}")
                lines += [f"           {line}" for line in want.mismatches(wrong)]
        else:
            lines.append(f"  {i + 1}. --  {want}")
    return lines


async def expect_nothing(
    subscription: Subscription,
    for_: float,
    kind: str | None = None,
    **parts: Any,
) -> list[Received]:
    """Asserts that no data event (or none matching `kind` and `expect`'s other arguments)
    arrives for `for_` seconds. At the end it makes a round trip to the server (a ping), so
    every event the server sent before then has arrived and is judged too. Returns the events
    it read and let pass."""
    __tracebackhide__ = True
    want = make_spec(kind, **parts)
    watch = _Watch(subscription, for_)

    def check(got: Received) -> None:
        __tracebackhide__ = True
        if _wanted(want, got) and not want.mismatches(got):
            raise watch.fail(f"expected no {want}, but {describe(got)} arrived")

    while (got := await watch.next()) is not None:
        check(got)
    await subscription._client.ping()
    while (got := await watch.next(wait=False)) is not None:
        check(got)
    return watch.seen
