"""Squashing (`min_interval_ms`) and its batches (`Event.more`): a squashed topic delivers the
first message at once and then a window's messages as one batch, one per key; a squashed,
filtered view ends equal to the table after fewer changes than were made, each batch applied
whole; a batch cut by a dropped connection is dropped and comes again after the resume; and,
without a server, a subscription holds a batch until its last event, moves its resume position
only at a batch's end, and drops a batch cut by a dropped connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import feedgate
from feedgate import col, pb
from feedgate.batch import Batch

from conftest import next_event, wait_until
from proxy import Proxy
from support import FAST, StateLog, counters_table, table_state

#: Long enough that a test's quick writes all fall into one window, on a busy machine too.
INTERVAL_MS = 2000


def message(payload: str, cursor: bytes, more: bool = False) -> pb.Event:
    return pb.Event(
        subscription_id=1,
        cursor=cursor,
        message=pb.TopicMessage(topic="t", payload=payload.encode()),
        more=more,
    )


def payloads(events: list[pb.Event]) -> list[str]:
    return [event.message.payload.decode() for event in events]


class FakeClient:
    """What a `Subscription` asks of its client: only failures, recorded."""

    def __init__(self) -> None:
        self.failures: list[tuple[int, str]] = []

    def _fail(self, subscription: Any, code: int, message: str, **_: Any) -> None:
        self.failures.append((code, message))

    def _overflow(self, subscription: Any) -> None:
        self.failures.append((feedgate.ErrorCode.SLOW_CONSUMER, "overflow"))


def test_a_batch_is_held_until_its_last_event_and_dropped_on_request():
    batch = Batch()
    assert payloads(batch.add(message("1", b"c1"))) == ["1"]
    assert batch.add(message("2", b"c2", more=True)) == []
    assert batch.add(message("3", b"c3", more=True)) == []
    assert len(batch) == 2
    assert payloads(batch.add(message("4", b"c4"))) == ["2", "3", "4"]
    assert len(batch) == 0
    batch.add(message("5", b"c5", more=True))
    assert batch.drop() == 1
    assert payloads(batch.add(message("6", b"c6"))) == ["6"]


def test_a_batch_longer_than_the_limit_is_refused():
    batch = Batch(limit=3)
    batch.add(message("1", b"", more=True))
    batch.add(message("2", b"", more=True))
    assert payloads(batch.add(message("3", b""))) == ["1", "2", "3"]  # 3 events: at the limit
    batch.add(message("1", b"", more=True))
    batch.add(message("2", b"", more=True))
    with pytest.raises(feedgate.FeedgateError) as refused:
        batch.add(message("3", b"", more=True))
    assert refused.value.code == feedgate.ErrorCode.LIMIT_EXCEEDED
    assert len(batch) == 0


async def test_a_subscription_delivers_whole_batches_and_resumes_from_a_batch_end():
    received: list[tuple[str, bytes]] = []
    client = FakeClient()
    feed = {"topic": pb.TopicFeed(topic="t", min_interval_ms=100)}
    subscription = feedgate.Subscription(
        client,  # type: ignore[arg-type]
        1,
        feed,
        b"",
        lambda event: received.append((event.message.payload.decode(), subscription.last_cursor)),
        10,
    )
    subscription._deliver(message("1", b"c1"))
    subscription._deliver(message("2", b"c2", more=True))
    subscription._deliver(message("3", b"c3", more=True))
    assert received == [("1", b"c1")], "a batch's events are held"
    assert subscription.last_cursor == b"c1", "the position moves only at a batch's end"
    subscription._deliver(message("4", b"c4"))
    # Released together: while they are delivered, the position is already the batch's end.
    assert received[1:] == [("2", b"c4"), ("3", b"c4"), ("4", b"c4")]
    # The connection drops in the middle of the next batch: its part is dropped, and the resume
    # starts after the last whole batch.
    subscription._deliver(message("5", b"c5", more=True))
    resume = subscription._resume_request()
    assert resume is not None and resume.resume_from == b"c4"
    assert resume.topic.min_interval_ms == 100
    # The resume sends those changes again (unsquashed, each a lone event).
    subscription._deliver(message("5", b"c5"))
    subscription._deliver(message("6", b"c6", more=True))
    subscription._deliver(message("7", b"c7"))
    assert [payload for payload, _ in received] == ["1", "2", "3", "4", "5", "6", "7"]
    assert subscription.last_cursor == b"c7"
    assert client.failures == []


async def test_an_iterated_subscription_queues_a_batch_whole_or_not_at_all():
    client = FakeClient()
    subscription = feedgate.Subscription(
        client, 1, {"topic": pb.TopicFeed(topic="t")}, b"", None, 3  # type: ignore[arg-type]
    )
    subscription._deliver(message("1", b"c1", more=True))
    subscription._deliver(message("2", b"c2"))
    assert len(subscription._queue) == 2
    subscription._deliver(message("3", b"c3", more=True))
    subscription._deliver(message("4", b"c4"))  # 2 + 2 > 3: the queue cannot take the batch
    assert client.failures == [(feedgate.ErrorCode.SLOW_CONSUMER, "overflow")]
    assert payloads(list(subscription._queue)) == ["1", "2"]


async def test_a_squashed_topic_sends_the_first_message_at_once_then_one_batch(client):
    topic = "py.squash.prices"
    received: list[tuple[str, bool, bytes]] = []

    def on_event(event: pb.Event) -> None:
        if event.WhichOneof("body") == "message":
            received.append((event.message.payload.decode(), event.more, subscription.last_cursor))

    subscription = await client.subscribe_topic(
        topic, min_interval_ms=INTERVAL_MS, on_event=on_event
    )
    iterated = await client.subscribe_topic(topic, min_interval_ms=INTERVAL_MS)
    published: dict[str, bytes] = {}
    for payload, key in [("1", "k1"), ("2", "k1"), ("3", "k2"), ("4", ""), ("5", "k1"), ("6", "")]:
        published[payload] = (await client.publish(topic, payload, key=key)).cursor
    await client.ping()
    assert [payload for payload, _, _ in received] == ["1"], "the first message goes at once"
    await wait_until(lambda: len(received) == 5, timeout=INTERVAL_MS / 1000 + 10, what="the batch")
    # k1's 2 collapsed into its 5, which takes the place of k1's latest message; messages
    # without a key are all kept. The batch came whole: while its first event was delivered,
    # the subscription's position was already the batch's last event's.
    assert received == [
        ("1", False, published["1"]),
        ("3", True, published["6"]),
        ("4", True, published["6"]),
        ("5", True, published["6"]),
        ("6", False, published["6"]),
    ]
    assert subscription.last_cursor == published["6"]

    events = []
    while len(events) < 5:
        event = await next_event(iterated, timeout=INTERVAL_MS / 1000 + 10)
        if event.WhichOneof("body") != "message":
            continue
        events.append(event)
        if len(events) == 2:
            # At the batch's first event, the iterator's position is the batch's end already.
            assert iterated.last_cursor == published["6"]
    assert payloads(events) == ["1", "3", "4", "5", "6"]
    assert [event.more for event in events] == [False, True, True, True, False]
    await subscription.unsubscribe()
    await iterated.unsubscribe()


async def test_a_squashed_filtered_view_collapses_changes_and_ends_equal_to_the_table(
    client, db, table
):
    await db.execute(
        f"INSERT INTO {table} (id, name, price) VALUES (1, 'a', 1), (2, 'b', 1), (3, 'c', 1)"
    )
    changes: list[tuple[str, int, int | None, bool, dict[int, int]]] = []
    views: list[feedgate.MaterializedView] = []

    def on_change(kind: str, key: int, row: dict | None, change: feedgate.ViewChange) -> None:
        if kind == "initial":
            return
        # The rows as the application sees them when told of the change.
        prices = {k: int(r["price"]) for k, r in views[0].rows.items()}
        old_price = int(change.old_row["price"]) if change.old_row else None
        changes.append((kind, key, old_price, change.more, prices))

    view = await client.materialized_view(
        table, filter=col("price") < 100, min_interval_ms=INTERVAL_MS, on_change=on_change
    )
    views.append(view)
    await view.wait_ready()
    statements = [
        f"UPDATE {table} SET price = 2 WHERE id = 1",  # sent at once; opens the window
        f"UPDATE {table} SET price = 3 WHERE id = 1",
        f"UPDATE {table} SET price = 4 WHERE id = 1",
        f"INSERT INTO {table} (id, name, price) VALUES (10, 'x', 1)",
        f"DELETE FROM {table} WHERE id = 10",  # inserted and deleted: nothing
        f"UPDATE {table} SET price = 500 WHERE id = 2",  # out of the filter...
        f"UPDATE {table} SET price = 5 WHERE id = 2",  # ... and back in: an update
        f"UPDATE {table} SET name = 'c2' WHERE id = 3",
    ]
    for statement in statements:
        await db.execute(statement)
    await wait_until(lambda: len(changes) == 4, timeout=INTERVAL_MS / 1000 + 10, what="4 changes")
    rows = await db.fetch(f"SELECT id, name, price FROM {table} WHERE price < 100")
    want = {row["id"]: (row["name"], int(row["price"])) for row in rows}
    assert {k: (r["name"], int(r["price"])) for k, r in view.rows.items()} == want
    final = {1: 4, 2: 5, 3: 1}
    assert changes == [
        ("update", 1, 1, False, {1: 2, 2: 1, 3: 1}),
        # One batch, in the order of each row's latest change; old_row is the row as the view
        # had it; the view held the whole batch before on_change heard of any of it.
        ("update", 1, 2, True, final),
        ("update", 2, 1, True, final),
        ("update", 3, 1, False, final),
    ]
    await client.ping()
    assert len(changes) == 4, f"{len(statements)} changes reached the view as 4"
    await view.close()


async def test_min_interval_ms_is_passed_on_and_the_server_checks_its_range(client, table):
    with pytest.raises(feedgate.FeedgateError) as refused:
        await client.subscribe_topic("py.squash.x", min_interval_ms=60_001)
    assert refused.value.code == feedgate.ErrorCode.VALIDATION
    with pytest.raises(ValueError):  # not a uint32: the protocol cannot carry it
        await client.subscribe_table(table, min_interval_ms=-1)
    subscription = await client.subscribe_table(table, min_interval_ms=60_000)
    # Ready before unsubscribing: an unsubscribe while the server takes the subscription's
    # snapshot can leave a pooled database connection inside a transaction (a server bug, sqlx
    # 0.8.6's cancelled begin()), which fails a later snapshot of the session's server.
    await asyncio.wait_for(subscription.ready.wait(), 10)
    await subscription.unsubscribe()


class Model:
    """A table subscription's rows rebuilt from its events, recording every UPDATE or DELETE
    whose `old_row` is not the row it holds: what a partial batch kept across a resume (or one
    applied without the rest) would lead to."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.mismatches: list[tuple[int, Any, Any]] = []
        self.changes = 0
        self.readies = 0

    def __call__(self, event: pb.Event) -> None:
        body = event.WhichOneof("body")
        if body == "ready":
            self.readies += 1
        if body != "change":
            return
        self.changes += 1
        change = event.change
        key = feedgate.key_of(change.key)
        if change.kind in (pb.CHANGE_KIND_UPDATE, pb.CHANGE_KIND_DELETE):
            old = feedgate.row_to_dict(change.old_row)
            if self.rows.get(key) != old:
                self.mismatches.append((key, self.rows.get(key), old))
        if change.kind == pb.CHANGE_KIND_DELETE:
            self.rows.pop(key, None)
        else:
            self.rows[key] = feedgate.row_to_dict(change.new_row)


async def test_a_batch_cut_by_a_dropped_connection_is_dropped_and_comes_again(server, db):
    # Rows of ~300 bytes: the batch spans several frames even in bundles (at most 64 KiB each).
    table = await counters_table(db, rows=500, pad=300)
    model = Model()
    log = StateLog()
    held_at_the_cut: list[int] = []

    def on_state(state: str, error: feedgate.FeedgateError | None) -> None:
        log(state, error)  # type: ignore[arg-type]
        if state == "reconnecting":
            held_at_the_cut.append(len(subscription._batch))

    proxy = await Proxy(server.port).start()
    try:
        async with feedgate.connect(proxy.url, reconnect=FAST, on_state_change=on_state) as client:
            subscription = await client.subscribe_table(
                table, include_initial=True, min_interval_ms=INTERVAL_MS, on_event=model
            )
            await wait_until(lambda: model.readies == 1, what="the initial rows")
            await db.execute(f"UPDATE {table} SET version = version + 1 WHERE id = 1")
            await wait_until(lambda: model.changes == 501, what="the lone first change")
            # Within the window: 500 rows change, sent as one batch when it ends. The proxy
            # cuts the connection past the batch's first bundle, inside a later frame.
            await db.execute(f"UPDATE {table} SET version = version + 1")
            proxy.cut_within(100_000)
            await log.reached("open", 2, timeout=INTERVAL_MS / 1000 + 20)
            want = {i: 2 for i in range(1, 501)} | {1: 3}
            await wait_until(
                lambda: {k: r["version"] for k, r in model.rows.items()} == want,
                what="the batch's changes, again, after the resume",
            )
            await client.ping()
            assert not subscription.closed
    finally:
        await proxy.close()
    assert proxy.cut_inside_frame
    assert held_at_the_cut and held_at_the_cut[0] > 0, "the cut fell inside the batch"
    assert model.changes == 501 + 500, "none of the cut batch was delivered before the resume"
    assert model.mismatches == []
    assert model.readies == 1
    assert {i: r["version"] for i, r in model.rows.items()} == await table_state(db, table)
