"""The materialized-view helper: a dict keyed by primary key, kept live, rebuilt after a reset."""

from __future__ import annotations

from decimal import Decimal

import pytest

import feedgate


async def table_state(db, table: str) -> dict:
    rows = await db.fetch(f"SELECT id, name, price FROM {table}")
    return {row["id"]: (row["name"], row["price"]) for row in rows}


def view_state(view: feedgate.MaterializedView) -> dict:
    return {key: (row["name"], row["price"]) for key, row in view.rows.items()}


async def test_view_follows_the_table(client, db, table):
    await db.execute(
        f"INSERT INTO {table} (id, name, price) SELECT g, 'row ' || g, g * 1.5 "
        "FROM generate_series(1, 500) g"
    )
    changes = []
    view = await client.materialized_view(table, on_change=lambda *c: changes.append(c))
    await view.wait_ready()
    assert len(view) == 500
    assert view_state(view) == await table_state(db, table)
    assert view.get(7)["price"] == Decimal("10.5")

    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1000, 'new')")
    await db.execute(f"UPDATE {table} SET name = 'renamed' WHERE id <= 10")
    await db.execute(f"UPDATE {table} SET id = 2000 WHERE id = 20")  # the primary key changes
    await db.execute(f"DELETE FROM {table} WHERE id BETWEEN 100 AND 199")
    expected = await table_state(db, table)
    await view.wait_until(lambda rows: view_state(view) == expected, within=10)
    assert 20 not in view.rows and view.get(2000)["name"] == "row 20"
    assert ("delete", 150, None) in [c[:3] for c in changes]
    assert sum(1 for kind, *_ in changes if kind == "initial") == 500
    # The fourth argument carries the rest of the event.
    delete = next(c[3] for c in changes if c[:2] == ("delete", 150))
    assert delete.old_row["name"] == "row 150" and delete.row is None
    assert delete.transaction_id > 0 and delete.commit_time is not None
    assert delete.cursor
    update = next(c[3] for c in changes if c[0] == "update")
    assert update.old_row is not None and update.row is not None
    initial = next(c[3] for c in changes if c[0] == "initial")
    assert initial.old_row is None and initial.commit_time is None

    # A three-argument callback still works.
    three = []
    other = await client.materialized_view(table, on_change=lambda k, key, row: three.append(k))
    await other.wait_ready()
    assert three and set(three) == {"initial"}
    await other.close()

    await view.close()
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (3000, 'after close')")
    await client.ping()
    assert 3000 not in view.rows


async def test_view_rebuilds_after_truncate(client, db, table):
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b')")
    view = await client.materialized_view(table)
    await view.wait_ready()
    assert set(view.rows) == {1, 2}

    async with db.transaction():
        await db.execute(f"TRUNCATE {table}")
        await db.execute(f"INSERT INTO {table} (id, name) VALUES (3, 'c')")
    await view.wait_until(lambda rows: view.resets == 1 and set(rows) == {3}, within=10)
    assert view.error is None

    await db.execute(f"INSERT INTO {table} (id, name) VALUES (4, 'd')")
    await view.wait_until({3: {"name": "c"}, 4: {"name": "d"}}, within=10)


async def test_view_of_a_missing_table_raises_not_found(client):
    with pytest.raises(feedgate.FeedgateError) as caught:
        await client.materialized_view("public.no_such_table")
    assert caught.value.code == feedgate.ErrorCode.NOT_FOUND
