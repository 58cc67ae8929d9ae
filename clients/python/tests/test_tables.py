"""Table changefeeds through the client: snapshot, then live changes, with typed values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import feedgate
from feedgate import pb

from conftest import next_event


async def collect_until_ready(subscription: feedgate.Subscription) -> list[pb.Event]:
    events = []
    while True:
        event = await next_event(subscription)
        if event.WhichOneof("body") == "ready":
            return events
        events.append(event)


async def test_snapshot_then_live_changes(client, db, table):
    await db.execute(
        f"INSERT INTO {table} (id, name, price, tags) VALUES "
        "(1, 'one', 1.5, '[\"a\"]'), (2, 'two', 2.25, null), (3, 'three', null, '{\"k\": 1}')"
    )
    subscription = await client.subscribe_table(table, include_initial=True)

    initial = await collect_until_ready(subscription)
    assert subscription.ready.is_set()
    assert {event.change.kind for event in initial} == {pb.CHANGE_KIND_INITIAL}
    rows = {feedgate.key_of(e.change.key): feedgate.row_to_dict(e.change.new_row) for e in initial}
    assert rows == {
        1: {"id": 1, "name": "one", "price": Decimal("1.5"), "added": None, "tags": ["a"]},
        2: {"id": 2, "name": "two", "price": Decimal("2.25"), "added": None, "tags": None},
        3: {"id": 3, "name": "three", "price": None, "added": None, "tags": {"k": 1}},
    }

    await db.execute(
        f"INSERT INTO {table} (id, name, added) VALUES (4, 'four', '2026-11-22 10:00:00.000001+00')"
    )
    await db.execute(f"UPDATE {table} SET price = 99999999999999999999.000001 WHERE id = 1")
    await db.execute(f"DELETE FROM {table} WHERE id = 2")

    insert = (await next_event(subscription)).change
    assert insert.kind == pb.CHANGE_KIND_INSERT
    assert insert.table == table
    assert insert.transaction_id > 0 and insert.commit_time_micros > 0
    assert feedgate.row_to_dict(insert.new_row)["added"] == dt.datetime(
        2026, 11, 22, 10, 0, 0, 1, tzinfo=dt.timezone.utc
    )

    update = (await next_event(subscription)).change
    assert update.kind == pb.CHANGE_KIND_UPDATE
    assert feedgate.row_to_dict(update.old_row)["price"] == Decimal("1.5")
    assert feedgate.row_to_dict(update.new_row)["price"] == Decimal("99999999999999999999.000001")

    delete = await next_event(subscription)
    assert delete.change.kind == pb.CHANGE_KIND_DELETE
    assert feedgate.key_of(delete.change.key) == 2
    assert delete.cursor, "changes carry a cursor"
    assert subscription.last_cursor == delete.cursor


async def test_without_initial_rows_ready_comes_first(client, db, table):
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'before')")
    subscription = await client.subscribe_table(table)
    assert (await next_event(subscription)).WhichOneof("body") == "ready"
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (2, 'after')")
    event = await next_event(subscription)
    assert event.change.kind == pb.CHANGE_KIND_INSERT
    assert feedgate.row_to_dict(event.change.new_row) == {
        "id": 2, "name": "after", "price": None, "added": None, "tags": None,
    }


async def test_values_of_every_kind(client, db):
    await db.execute(
        """CREATE TABLE typed (
             id uuid PRIMARY KEY, b boolean, i bigint, d double precision, n numeric,
             t text, raw bytea, at timestamptz, wall timestamp, day date, doc jsonb,
             list int[])"""
    )
    await db.execute("SELECT feedgate.watch('typed')")
    subscription = await client.subscribe_table("typed")
    await next_event(subscription)  # ready
    await db.execute(
        """INSERT INTO typed VALUES (
             '6f1c1f43-8e4e-4a3c-9b84-5f8d6f7a2b10', true, -9223372036854775808, 0.25,
             'NaN', 'héllo', '\\x00ff', '1999-12-31 23:59:59.999999+00',
             '2026-01-02 03:04:05.678', '2026-11-22', '{"a": [1, 2.5, null]}', '{1,2,3}')"""
    )
    change = (await next_event(subscription)).change
    row = feedgate.row_to_dict(change.new_row)
    assert row["id"] == "6f1c1f43-8e4e-4a3c-9b84-5f8d6f7a2b10"
    assert row["b"] is True
    assert row["i"] == -9223372036854775808
    assert row["d"] == 0.25
    assert row["n"].is_nan()
    assert row["t"] == "héllo"
    assert row["raw"] == b"\x00\xff"
    assert row["at"] == dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)
    assert row["wall"] == dt.datetime(2026, 1, 2, 3, 4, 5, 678000)
    assert row["day"] == dt.date(2026, 11, 22)
    assert row["doc"] == {"a": [1, 2.5, None]}
    assert row["list"] == [1, 2, 3]
    assert feedgate.key_of(change.key) == "6f1c1f43-8e4e-4a3c-9b84-5f8d6f7a2b10"


async def test_unsubscribe_ends_iteration(client, db, table):
    subscription = await client.subscribe_table(table)
    await next_event(subscription)  # ready
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'x')")
    assert (await next_event(subscription)).change.kind == pb.CHANGE_KIND_INSERT
    await subscription.unsubscribe()
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (2, 'y')")
    await client.ping()
    # Iteration ends (no hang, no error) and nothing after Unsubscribed arrives.
    assert [event async for event in subscription] == []
    assert subscription.closed and subscription.error is None
