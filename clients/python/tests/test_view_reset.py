"""A materialized view that cannot resume rebuilds from a new snapshot and says so once, and
never shows a mix: its rows are always empty (before the first snapshot is complete) or a
complete state of the table (the old one while a rebuild runs, then the new one)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

import feedgate
from feedgate import ErrorCode

from conftest import wait_until
from proxy import Proxy
from support import FAST, StateLog, counters_table


ROWS = 3000


async def full_rows(db: asyncpg.Connection, table: str) -> dict[int, dict[str, Any]]:
    """The table as the view should hold it."""
    rows = await db.fetch(f"SELECT id, version, pad FROM {table}")
    return {r["id"]: dict(r) for r in rows}


class Watcher:
    """Looks at the view between every two steps of the event loop, where any other task of
    the application could look, and keeps every sight of rows that are not an allowed state."""

    def __init__(self, view: feedgate.MaterializedView) -> None:
        self.view = view
        self.allowed: list[dict[int, dict[str, Any]]] = []
        #: Sizes of the states seen that were not allowed.
        self.mixed: list[int] = []
        #: Looks taken while the view was not ready (a snapshot or a rebuild under way).
        self.unready_looks = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            rows = self.view.rows
            if not any(rows == allowed for allowed in self.allowed):
                self.mixed.append(len(rows))
            if not self.view.ready.is_set():
                self.unready_looks += 1
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_a_view_cut_mid_snapshot_rebuilds_once_and_never_mixes(history_server, db):
    table = await counters_table(db, rows=ROWS, pad=100)
    first = await full_rows(db, table)
    proxy = await Proxy(history_server.port).start()
    log = StateLog()
    changes: list[tuple[str, Any]] = []
    resets: list[feedgate.FeedgateError] = []
    watcher: Watcher | None = None
    try:
        async with feedgate.connect(proxy.url, reconnect=FAST, on_state_change=log) as client:
            # 1. The connection is cut inside a frame while the first snapshot arrives (about
            # 32 KiB into it: some INITIAL rows have reached on_change, most have not).
            proxy.cut_within(32 * 1024)
            view = await client.materialized_view(
                table,
                on_change=lambda kind, key, row: changes.append((kind, key)),
                on_reset=resets.append,
            )
            watcher = Watcher(view)
            watcher.allowed = [{}, first]
            await asyncio.wait_for(view.wait_ready(), 30)
            assert proxy.cuts == 1 and proxy.cut_inside_frame
            assert log.states == ["connecting", "open", "reconnecting", "open"]
            assert view.rows == first
            assert view.resets == 1 and len(resets) == 1
            assert resets[0].code == ErrorCode.RESUME_UNAVAILABLE  # made by the client
            assert "position to resume from" in resets[0].message
            initial = [key for kind, key in changes if kind == "initial"]
            assert 0 < len(initial) < ROWS and len(set(initial)) == len(initial)
            assert {kind for kind, _ in changes} == {"initial"}  # the rebuild's rows: on_reset

            # 2. The table is reset (SOURCE_RESET), and the rebuild's snapshot is cut too: the
            # old rows stay until the new snapshot is complete, then one on_reset.
            second = {
                i: {"id": i, "version": 7, "pad": "y" * 100} for i in range(ROWS + 1, 2 * ROWS + 1)
            }
            watcher.allowed = [first, second]
            proxy.cut_within(32 * 1024)
            async with db.transaction():
                await db.execute(f"TRUNCATE {table}")
                await db.execute(
                    f"INSERT INTO {table} SELECT g, 7, repeat('y', 100) "
                    f"FROM generate_series({ROWS + 1}, {2 * ROWS}) g"
                )
            assert await full_rows(db, table) == second
            await wait_until(lambda: view.resets == 2, 30, "the second rebuild")
            assert proxy.cuts == 2 and proxy.cut_inside_frame
            assert log.states == ["connecting", "open"] + ["reconnecting", "open"] * 2
            assert view.ready.is_set() and view.rows == second
            assert [r.code for r in resets] == [
                ErrorCode.RESUME_UNAVAILABLE,
                ErrorCode.SOURCE_RESET,
            ]
            assert {kind for kind, _ in changes} == {"initial"}
            await watcher.stop()  # from here on, live changes move the rows one by one

            # 3. Live again: changes apply to the rebuilt rows, with no further reset.
            count = len(changes)
            await db.execute(f"UPDATE {table} SET version = 8 WHERE id <= {ROWS + 10}")
            expected = await full_rows(db, table)
            await wait_until(lambda: view.rows == expected, 10, "the update")
            assert [kind for kind, _ in changes[count:]] == ["update"] * 10
            await client.ping()
            assert view.resets == 2 and len(resets) == 2 and view.error is None
    finally:
        if watcher is not None:
            await watcher.stop()
        await proxy.close()
    assert watcher.unready_looks > 0  # the watcher did look while the view was rebuilding
    assert watcher.mixed == [], f"the view showed {len(watcher.mixed)} mixed states"
