"""Topics through the client: publish and subscribe, several subscriptions on one connection."""

from __future__ import annotations

import asyncio

import feedgate
from feedgate import pb

from conftest import next_event


async def test_publish_and_subscribe(client, server):
    subscription = await client.subscribe_topic("orders.created")
    assert (await next_event(subscription)).WhichOneof("body") == "ready"

    async with feedgate.connect(server.url) as publisher:
        published = [
            await publisher.publish(
                "orders.created",
                f"order {n}",
                key=f"customer-{n % 2}",
                headers={"source": "pytest"},
                idempotency_key=f"order-{n}",
            )
            for n in range(3)
        ]
    offsets = [p.offset for p in published]
    assert offsets == sorted(offsets) and len(set(offsets)) == 3

    for n in range(3):
        event = await next_event(subscription)
        message = event.message
        assert message.topic == "orders.created"
        assert message.payload == f"order {n}".encode()
        assert message.key == f"customer-{n % 2}"
        assert message.headers["source"] == "pytest"
        assert message.headers["idempotency-key"] == f"order-{n}"
        assert message.offset == offsets[n]
        assert event.cursor == published[n].cursor


async def test_several_subscriptions_on_one_connection(client, db, table):
    first = await client.subscribe_topic("multi.a")
    second = await client.subscribe_topic("multi.b")
    rows = await client.subscribe_table(table)
    received: list[pb.Event] = []
    callback = await client.subscribe_topic("multi.a", on_event=received.append)
    assert len({first.id, second.id, rows.id, callback.id}) == 4
    for subscription in (first, second, rows):
        assert (await next_event(subscription)).WhichOneof("body") == "ready"

    await client.publish("multi.b", b"to b")
    await client.publish("multi.a", b"to a")
    await db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'row')")

    assert (await next_event(first)).message.payload == b"to a"
    assert (await next_event(second)).message.payload == b"to b"
    assert (await next_event(rows)).change.kind == pb.CHANGE_KIND_INSERT
    await client.ping()
    assert [e.WhichOneof("body") for e in received] == ["ready", "message"]
    assert received[1].message.payload == b"to a"
    assert all(e.subscription_id == callback.id for e in received)

    # Ending one subscription leaves the others running.
    await first.unsubscribe()
    await client.publish("multi.a", b"again")
    await client.ping()
    assert received[-1].message.payload == b"again"
    assert [e async for e in first] == []


async def test_subscriptions_and_publishes_pipeline(client):
    subscriptions = await asyncio.gather(
        *(client.subscribe_topic(f"pipelined.{n}") for n in range(10))
    )
    for subscription in subscriptions:
        assert (await next_event(subscription)).WhichOneof("body") == "ready"
    await asyncio.gather(
        *(client.publish(f"pipelined.{n}", str(n)) for n in range(10))
    )
    for n, subscription in enumerate(subscriptions):
        assert (await next_event(subscription)).message.payload == str(n).encode()
