"""Helpers for the reconnect tests: a writer that commits numbered row versions, a recorder
that checks what a subscription saw of them, and a log of a client's state changes to wait on.

The writer keeps, per row, how many versions it committed (`model`); every committed UPDATE
adds exactly 1 to the row's `version` column. So a subscriber that saw every change once and in
order saw versions 1, 2, ..., n of each row (then a delete, if the row was deleted): any gap,
double or reordering shows in that list.
"""

from __future__ import annotations

import asyncio
import itertools
import os

import asyncpg

import feedgate
from feedgate import pb

from conftest import wait_until

#: Quick reconnects for tests: the first wait is 10-20 ms, never more than 0.5 s.
FAST = feedgate.ReconnectOptions(initial_delay=0.02, max_delay=0.5)

_tables = itertools.count(1)

#: Marks a delete in a row's history.
DELETED = "deleted"


async def counters_table(db: asyncpg.Connection, rows: int = 0, pad: int = 0) -> str:
    """A fresh watched table `public.counters_<n>` (id, version, pad) with `rows` rows at
    version 1 (ids 1..rows), each with `pad` characters of padding."""
    name = f"counters_{os.getpid()}_{next(_tables)}"
    await db.execute(
        f"CREATE TABLE {name} (id bigint PRIMARY KEY, version bigint NOT NULL, pad text)"
    )
    if rows:
        await db.execute(
            f"INSERT INTO {name} SELECT g, 1, repeat('x', $1) FROM generate_series(1, $2) g",
            pad,
            rows,
        )
    await db.execute("SELECT feedgate.watch($1)", f"public.{name}")
    return f"public.{name}"


async def table_state(db: asyncpg.Connection, table: str) -> dict[int, int]:
    """{id: version} as the database has it."""
    return {r["id"]: r["version"] for r in await db.fetch(f"SELECT id, version FROM {table}")}


class Writer:
    """Commits transactions to a counters table until stopped: inserts (version 1), updates of
    one or two rows (version + 1), a delete now and then, and a rolled-back update that nobody
    may see. `model` is what was committed: id -> versions committed (the history)."""

    def __init__(self, database_url: str, table: str, existing: int = 0, deletes: bool = False):
        self._url = database_url
        self._table = table
        self._deletes = deletes
        self.history: dict[int, list[int | str]] = {i: [1] for i in range(1, existing + 1)}
        self._next_id = existing + 1
        #: Transactions committed.
        self.committed = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Writer:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def wait_committed(self, count: int, timeout: float = 30) -> None:
        """Waits until `count` more transactions than now are committed."""
        target = self.committed + count
        await wait_until(
            lambda: self.committed >= target or self._task.done(),
            timeout,
            f"{count} more committed transactions",
        )
        if self._task.done():
            self._task.result()  # raises what stopped the writer

    def live(self) -> list[int]:
        return [i for i, h in self.history.items() if h[-1] != DELETED]

    async def _run(self) -> None:
        conn = await asyncpg.connect(self._url)
        try:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                await self._transaction(conn, n)
        finally:
            await conn.close()

    async def _transaction(self, conn: asyncpg.Connection, n: int) -> None:
        live = self.live()
        t = self._table
        if n % 4 == 0 or len(live) < 4:
            new = self._next_id
            self._next_id += 1
            await conn.execute(f"INSERT INTO {t} (id, version) VALUES ($1, 1)", new)
            self.history[new] = [1]
        elif n % 10 == 5:
            # Rolled back: must never reach a subscriber.
            tx = conn.transaction()
            await tx.start()
            await conn.execute(f"UPDATE {t} SET version = version + 1000 WHERE id = $1", live[0])
            await tx.rollback()
        elif self._deletes and n % 15 == 7:
            victim = live[(n * 7) % len(live)]
            await conn.execute(f"DELETE FROM {t} WHERE id = $1", victim)
            self.history[victim].append(DELETED)
        else:
            ids = sorted({live[(n * 7) % len(live)], live[(n * 13) % len(live)]})
            await conn.execute(
                f"UPDATE {t} SET version = version + 1 WHERE id = ANY($1::bigint[])", ids
            )
            for i in ids:
                self.history[i].append(self.history[i][-1] + 1)  # type: ignore[operator]
        self.committed += 1


class Recorder:
    """What one table subscription delivered: per row, the versions in arrival order."""

    def __init__(self) -> None:
        self.seen: dict[int, list[int | str]] = {}
        self.readies = 0
        self.events = 0

    def __call__(self, event: pb.Event) -> None:
        self.events += 1
        body = event.WhichOneof("body")
        if body == "ready":
            self.readies += 1
        if body != "change":
            return
        change = event.change
        key = feedgate.key_of(change.key)
        if change.kind == pb.CHANGE_KIND_DELETE:
            self.seen.setdefault(key, []).append(DELETED)
        else:
            self.seen.setdefault(key, []).append(feedgate.row_to_dict(change.new_row)["version"])

    def caught_up(self, history: dict[int, list[int | str]]) -> bool:
        return all(len(self.seen.get(i, [])) >= len(h) for i, h in history.items())


class StateLog:
    """Every state change of a client, to wait on and compare."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, feedgate.FeedgateError | None]] = []

    def __call__(self, state: str, error: feedgate.FeedgateError | None) -> None:
        self.changes.append((state, error))

    @property
    def states(self) -> list[str]:
        return [state for state, _ in self.changes]

    async def reached(self, state: str, times: int = 1, timeout: float = 20) -> None:
        """Waits until `state` has been entered `times` times in all."""
        await wait_until(
            lambda: self.states.count(state) >= times,
            timeout,
            f"state {state!r} x{times} (states so far: {self.states})",
        )
