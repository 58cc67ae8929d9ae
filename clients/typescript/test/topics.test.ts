// Topics through the client: publish and subscribe, several subscriptions on one connection.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChangeKind, Client, type Event } from "../src/index.js";
import { createTable, nextEvent, suite } from "./support.js";

const t = suite();

function message(event: Event) {
  assert.equal(event.body.case, "message");
  return event.body.value;
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

test("publish and subscribe", async () => {
  const subscription = await t.client.subscribeTopic("orders.created");
  assert.equal((await nextEvent(subscription)).body.case, "ready");

  const publisher = await Client.connect(t.env.server.url);
  const published = [];
  for (let n = 0; n < 3; n++) {
    published.push(
      await publisher.publish("orders.created", `order ${n}`, {
        key: `customer-${n % 2}`,
        headers: { source: "node" },
        idempotencyKey: `order-${n}`,
      }),
    );
  }
  await publisher.close();
  const offsets = published.map((p) => p.offset);
  assert.ok(offsets[0]! < offsets[1]! && offsets[1]! < offsets[2]!);

  for (let n = 0; n < 3; n++) {
    const event = await nextEvent(subscription);
    const m = message(event);
    assert.equal(m.topic, "orders.created");
    assert.equal(text(m.payload), `order ${n}`);
    assert.equal(m.key, `customer-${n % 2}`);
    assert.equal(m.headers.source, "node");
    assert.equal(m.headers["idempotency-key"], `order-${n}`);
    assert.equal(m.offset, offsets[n]);
    assert.deepEqual(event.cursor, published[n]!.cursor);
  }
});

test("several subscriptions on one connection", async () => {
  const table = await createTable(t.env.db);
  const first = await t.client.subscribeTopic("multi.a");
  const second = await t.client.subscribeTopic("multi.b");
  const rows = await t.client.subscribeTable(table);
  const received: Event[] = [];
  const callback = await t.client.subscribeTopic("multi.a", { onEvent: (e) => received.push(e) });
  assert.equal(new Set([first.id, second.id, rows.id, callback.id]).size, 4);
  for (const subscription of [first, second, rows]) {
    assert.equal((await nextEvent(subscription)).body.case, "ready");
  }

  await t.client.publish("multi.b", "to b");
  await t.client.publish("multi.a", "to a");
  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'row')`);

  assert.equal(text(message(await nextEvent(first)).payload), "to a");
  assert.equal(text(message(await nextEvent(second)).payload), "to b");
  const change = await nextEvent(rows);
  assert.equal(change.body.case === "change" && change.body.value.kind, ChangeKind.INSERT);
  await t.client.ping();
  assert.deepEqual(received.map((e) => e.body.case), ["ready", "message"]);
  assert.equal(text(message(received[1]!).payload), "to a");
  assert.ok(received.every((e) => e.subscriptionId === callback.id));

  // Ending one subscription leaves the others running.
  await first.unsubscribe();
  await t.client.publish("multi.a", "again");
  await t.client.ping();
  assert.equal(text(message(received.at(-1)!).payload), "again");
  const rest: Event[] = [];
  for await (const event of first) rest.push(event);
  assert.deepEqual(rest, []);
});

test("subscriptions and publishes pipeline", async () => {
  const subscriptions = await Promise.all(
    Array.from({ length: 10 }, (_, n) => t.client.subscribeTopic(`pipelined.${n}`)),
  );
  for (const subscription of subscriptions) await subscription.ready;
  await Promise.all(Array.from({ length: 10 }, (_, n) => t.client.publish(`pipelined.${n}`, `${n}`)));
  for (const [n, subscription] of subscriptions.entries()) {
    assert.equal((await nextEvent(subscription)).body.case, "ready");
    assert.equal(text(message(await nextEvent(subscription)).payload), `${n}`);
  }
});
