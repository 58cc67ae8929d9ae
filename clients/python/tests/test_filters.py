"""Filters built with `feedgate.col`, `path`, `key` and `header`: a filtered view holds exactly
the matching rows while rows move in and out; a topic subscription gets only matching messages;
a filter the server cannot use is refused with VALIDATION and the connection stays usable."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

import feedgate
from feedgate import col, header, key, path


async def test_a_filtered_view_holds_exactly_the_matching_rows(client, db, table):
    await db.execute(
        f"INSERT INTO {table} (id, name, price, added) SELECT g, 'row ' || g, g * 1.5, "
        "timestamptz '2026-01-01 00:00:00+00' + g * interval '1 day' FROM generate_series(1, 200) g"
    )
    cutoff = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    cheap_recent = (
        (col("price") < Decimal("200"))
        & (col("added") >= cutoff)
        & ~col("name").startswith("row 9")
    )
    view = await client.materialized_view(table, filter=cheap_recent)
    await view.wait_ready()

    async def matching() -> set[int]:
        rows = await db.fetch(
            f"SELECT id FROM {table} WHERE price < 200 AND added >= $1 AND name NOT LIKE 'row 9%'",
            cutoff,
        )
        return {row["id"] for row in rows}

    want = await matching()
    assert want and set(view.rows) == want
    # Rows move in (cheaper), out (pricier, renamed) and within the filter; others change too.
    await db.execute(f"UPDATE {table} SET price = 1 WHERE id BETWEEN 150 AND 160")
    await db.execute(f"UPDATE {table} SET price = 500 WHERE id BETWEEN 60 AND 70")
    await db.execute(f"UPDATE {table} SET name = 'row 9x' WHERE id = 80")
    await db.execute(f"UPDATE {table} SET name = 'renamed' WHERE id = 100")
    await db.execute(f"DELETE FROM {table} WHERE id IN (101, 5)")
    await db.execute(f"INSERT INTO {table} (id, name, price, added) VALUES (999, 'n', 2, now())")
    want = await matching()
    await view.wait_until(lambda rows: set(rows) == want and 999 in rows, within=10)
    assert view.rows[100]["name"] == "renamed"
    await view.close()


async def test_a_topic_subscription_gets_only_the_matching_messages(client):
    oil_north = (path("commodity") == "oil") & (path("regions") == "north_sea")
    received: list[int] = []
    subscription = await client.subscribe_topic(
        "py.ticks",
        filter=oil_north | (key() == "special") | (header("desk") == "gulf"),
        on_event=lambda e: received.append(json.loads(e.message.payload)["n"])
        if e.WhichOneof("body") == "message"
        else None,
    )
    ticks = [
        (1, {"commodity": "oil", "regions": ["north_sea", "gulf"]}, "", {}),
        (2, {"commodity": "gas", "regions": ["north_sea"]}, "", {}),
        (3, {"commodity": "gas"}, "special", {}),
        (4, {"commodity": "coal"}, "", {"desk": "gulf"}),
        (5, {"commodity": "oil", "regions": []}, "", {}),
    ]
    for n, body, message_key, headers in ticks:
        await client.publish("py.ticks", json.dumps({"n": n, **body}), key=message_key,
                             headers=headers)
    await client.publish("py.ticks", b"not json at all")
    await client.ping()
    assert received == [1, 3, 4]
    await subscription.unsubscribe()


async def test_a_filter_the_server_cannot_use_is_refused_and_the_connection_stays_usable(
    client, table
):
    with pytest.raises(feedgate.FeedgateError) as refused:
        await client.subscribe_table(table, filter=col("nope") == 1)
    assert refused.value.code == feedgate.ErrorCode.VALIDATION
    assert "column nope" in str(refused.value)
    with pytest.raises(feedgate.FeedgateError) as refused:
        await client.subscribe_table(table, filter=col("price") == "cheap")
    assert refused.value.code == feedgate.ErrorCode.VALIDATION
    with pytest.raises(feedgate.FeedgateError) as refused:
        await client.subscribe_topic("py.ticks", filter=col("id") == 1)
    assert "payload path" in str(refused.value)
    with pytest.raises(TypeError):
        col("price") == None  # noqa: E711 (builds a comparison with None: refused here)
    with pytest.raises(TypeError):
        bool(col("a") == 1)
    subscription = await client.subscribe_table(table, filter=col("id").one_of([1, 2]))
    await client.ping()
    await subscription.unsubscribe()


async def test_a_view_with_columns_holds_only_those_and_skips_other_updates(client, db, table):
    await db.execute(f"INSERT INTO {table} (id, name, price) VALUES (1, 'a', 1), (2, 'b', 2)")
    changes: list[str] = []
    view = await client.materialized_view(
        table, columns=["name"], on_change=lambda kind, *_: changes.append(kind)
    )
    await view.wait_ready()
    assert view.rows == {1: {"id": 1, "name": "a"}, 2: {"id": 2, "name": "b"}}
    await db.execute(f"UPDATE {table} SET price = 10 WHERE id = 1")  # not a column it holds
    await db.execute(f"UPDATE {table} SET name = 'c' WHERE id = 2")
    await view.wait_until(lambda rows: rows[2]["name"] == "c", within=10)
    assert changes.count("update") == 1
    await view.close()
