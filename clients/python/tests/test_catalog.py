"""The catalog through the client: watched tables with their columns' types and kinds, topic
routes, and only what the permissions allow."""

from __future__ import annotations

import feedgate
from feedgate import pb

from conftest import start_server, stop_server


async def test_catalog_lists_tables_and_routes(client, table):
    catalog = await client.catalog()
    assert catalog.database
    assert not catalog.HasField("tables_error")
    items = next(t for t in catalog.tables if t.table == table)
    assert list(items.primary_key) == ["id"]
    assert not items.row_filtered
    assert [(c.name, c.type, c.kind) for c in items.columns] == [
        ("id", "bigint", pb.VALUE_KIND_INT),
        ("name", "text", pb.VALUE_KIND_TEXT),
        ("price", "numeric", pb.VALUE_KIND_NUMERIC),
        ("added", "timestamp with time zone", pb.VALUE_KIND_TIMESTAMP_MICROS),
        ("tags", "jsonb", pb.VALUE_KIND_JSON),
    ]
    [route] = catalog.topics
    assert route.pattern == "#"
    assert route.backend == pb.TOPIC_BACKEND_MEMORY
    assert route.history and route.resume and route.subscribe_all and route.publish


async def test_catalog_follows_permissions(database_url, db, table, tmp_path):
    await db.execute("CREATE TABLE hidden_from_catalog (id int PRIMARY KEY, ok boolean)")
    await db.execute("SELECT feedgate.watch('public.hidden_from_catalog')")
    config = tmp_path / "permissions.toml"
    config.write_text(
        f"""
[[permissions]]
roles = ["*"]
subscribe_topics = ["public.#"]
publish_topics = ["public.chat"]
subscribe_tables = ["{table}"]
"""
    )
    server = start_server(database_url, "--config", str(config))
    try:
        async with feedgate.connect(server.url) as client:
            catalog = await client.catalog()
    finally:
        stop_server(server)
        await db.execute("DROP TABLE hidden_from_catalog")
    assert [t.table for t in catalog.tables] == [table]
    [route] = catalog.topics
    assert not route.subscribe_all
    assert route.publish
