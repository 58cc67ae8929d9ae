"""Subscriptions continue across reconnects with every change and message exactly once and in
order: through proxy cuts (plain, with bytes held back, inside a frame) while a writer and a
publisher keep going, and through a server killed with SIGKILL and started again on its port."""

from __future__ import annotations

import asyncio
import itertools
import logging
import urllib.parse

import feedgate
from feedgate import ErrorCode, pb

from conftest import kill_server, start_server, stop_server, wait_until
from proxy import DOWN, Proxy
from support import FAST, Recorder, StateLog, Writer, counters_table, table_state


class Publisher:
    """Publishes 0, 1, 2, ... to a topic, each once the previous one was accepted, until
    stopped; `published` counts the accepted ones."""

    def __init__(self, client: feedgate.Client, topic: str) -> None:
        self._client = client
        self._topic = topic
        self.published = 0
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            await self._client.publish(self._topic, str(n))
            self.published += 1

    async def stop(self) -> int:
        self._stop.set()
        await self._task
        return self.published


class Sequence:
    """A topic subscription's callback: the sequence numbers received, and the Readies."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.readies = 0

    def __call__(self, event: pb.Event) -> None:
        body = event.WhichOneof("body")
        if body == "ready":
            self.readies += 1
        elif body == "message":
            self.numbers.append(int(event.message.payload))


async def test_table_and_topic_continue_across_cuts(history_server, database_url, db):
    table = await counters_table(db, rows=50)
    proxy = await Proxy(history_server.port).start()
    log = StateLog()
    rows, numbers = Recorder(), Sequence()
    try:
        async with (
            feedgate.connect(proxy.url, reconnect=FAST, on_state_change=log) as client,
            feedgate.connect(history_server.url) as publishing,
        ):
            changes = await client.subscribe_table(table, include_initial=True, on_event=rows)
            messages = await client.subscribe_topic("resume.numbers", on_event=numbers)
            await wait_until(lambda: rows.readies == 1 and numbers.readies == 1)
            writer = Writer(database_url, table, existing=50).start()
            publisher = Publisher(publishing, "resume.numbers")

            async def progress() -> None:
                """Both streams move on (so both have a cursor, and the last cut is over)."""
                seen, numbered = rows.events, len(numbers.numbers)
                await wait_until(
                    lambda: rows.events >= seen + 200 and len(numbers.numbers) >= numbered + 200,
                    what="progress on both subscriptions",
                )

            await progress()
            proxy.cut()  # 1: plain, while everything flows
            await log.reached("open", 2)
            await progress()
            proxy.pause()  # 2: with events held back in the proxy, which the cut drops
            await wait_until(lambda: proxy.held_frames(DOWN) >= 20, what="events held")
            proxy.cut()
            proxy.resume()
            await log.reached("open", 3)
            await progress()
            proxy.cut_within(4096)  # 3: inside a frame
            await wait_until(lambda: proxy.cuts == 3, what="the budgeted cut")
            assert proxy.cut_inside_frame
            await log.reached("open", 4)
            await progress()

            await writer.stop()
            published = await publisher.stop()
            await wait_until(
                lambda: rows.caught_up(writer.history) and len(numbers.numbers) >= published,
                what="every change and message delivered",
            )
            await client.ping()
            assert not changes.closed and not messages.closed
    finally:
        await proxy.close()
    # Every row: each committed version once, in commit order; the rolled-back ones never.
    assert rows.seen == writer.history
    assert {i: h[-1] for i, h in writer.history.items()} == await table_state(db, table)
    assert numbers.numbers == list(range(published))
    assert rows.readies == 1 and numbers.readies == 1  # the resumed streams' Readies swallowed
    assert log.states == ["connecting", "open"] + ["reconnecting", "open"] * 3 + ["closed"]


def versions(view: feedgate.MaterializedView) -> dict[int, int]:
    return {key: row["version"] for key, row in view.rows.items()}


async def test_server_restart_resumes_tables_and_ends_memory_topics(database_url, db):
    server = start_server(database_url)
    port = server.port
    table = await counters_table(db, rows=200)
    log = StateLog()
    rows, resets, payloads = Recorder(), [], []
    try:
        async with feedgate.connect(server.url, reconnect=FAST, on_state_change=log) as client:
            changes = await client.subscribe_table(table, include_initial=True, on_event=rows)
            view = await client.materialized_view(table, on_reset=resets.append)
            await view.wait_ready()
            topic = await client.subscribe_topic(
                "restart.topic",
                on_event=lambda e: (
                    payloads.append(e.message.payload) if e.message.payload else None
                ),
            )
            await client.publish("restart.topic", "before")
            await wait_until(lambda: payloads == [b"before"] and rows.readies == 1)
            writer = Writer(database_url, table, existing=200, deletes=True).start()
            await writer.wait_committed(100)

            await asyncio.to_thread(kill_server, server)
            await log.reached("reconnecting")
            await writer.wait_committed(100)  # rows change while no server runs
            server = await asyncio.to_thread(start_server, database_url, listen=f"127.0.0.1:{port}")
            await log.reached("open", 2)
            # In-process topics keep their history in the process: it died with it.
            error = await asyncio.wait_for(topic.wait_closed(), 20)
            assert error.code == ErrorCode.RESUME_UNAVAILABLE and not error.retryable
            assert "another run" in error.message
            await writer.wait_committed(100)  # and after the restart
            await writer.stop()

            expected = await table_state(db, table)
            await wait_until(
                lambda: versions(view) == expected and rows.caught_up(writer.history),
                what="the view and the subscription caught up",
            )
            await client.ping()
            assert rows.seen == writer.history  # no gap, no double, in order
            assert versions(view) == expected  # the view equals the table
            assert view.ready.is_set() and view.resets == 0 and resets == []  # resumed, not rebuilt
            assert rows.readies == 1 and not changes.closed
            assert payloads == [b"before"]
            assert log.states == ["connecting", "open", "reconnecting", "open"]
    finally:
        await asyncio.to_thread(stop_server, server)


async def test_resumes_refused_while_the_database_is_down_are_retried(database_url, db, caplog):
    """A server restarted while PostgreSQL is unreachable answers the table resubscribes with a
    retryable SOURCE_UNAVAILABLE: the client is open again, retries those subscribes on the same
    connection, and once the database is back the subscriptions go on with no gap."""
    caplog.set_level(logging.INFO, logger="feedgate")
    url = urllib.parse.urlsplit(database_url)
    database = Proxy(url.port or 5432, websocket=False)
    await database.start()
    via_proxy = url._replace(netloc=f"{url.username}@127.0.0.1:{database.port}").geturl()
    server = start_server(database_url)
    port = server.port
    table = await counters_table(db, rows=20)
    log = StateLog()
    rows = Recorder()
    try:
        async with feedgate.connect(server.url, reconnect=FAST, on_state_change=log) as client:
            changes = await client.subscribe_table(table, include_initial=True, on_event=rows)
            view = await client.materialized_view(table)
            await view.wait_ready()
            writer = Writer(database_url, table, existing=20, deletes=True).start()
            await writer.wait_committed(50)

            await asyncio.to_thread(kill_server, server)
            database.refusing = True
            server = await asyncio.to_thread(
                start_server,
                via_proxy,
                listen=f"127.0.0.1:{port}",
                wait_database=False,
            )
            await log.reached("open", 2)
            await writer.wait_committed(50)
            await wait_until(lambda: len(refusals(caplog)) >= 4, what="both resumes refused twice")
            assert all("SOURCE_UNAVAILABLE" in message for message in refusals(caplog))
            assert client.state == "open" and not changes.closed and view.error is None
            assert view.ready.is_set() and view.resets == 0  # stale for now, not rebuilt

            database.refusing = False  # PostgreSQL is back
            await writer.wait_committed(50)
            await writer.stop()
            expected = await table_state(db, table)
            await wait_until(
                lambda: versions(view) == expected and rows.caught_up(writer.history),
                30,
                "the view and the subscription caught up",
            )
            await client.ping()
            assert rows.seen == writer.history and rows.readies == 1
            assert versions(view) == expected and view.resets == 0
            assert log.states == ["connecting", "open", "reconnecting", "open"]
    finally:
        await asyncio.to_thread(stop_server, server)
        await database.close()


def refusals(caplog) -> list[str]:
    """The client's log lines about a resume refused retryably."""
    return [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming subscription")
    ]
