// Table changefeeds through the client: snapshot, then live changes, with typed values.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChangeKind, type Event, keyOf, rowToObject, type Subscription } from "../src/index.js";
import { createTable, nextEvent, suite } from "./support.js";

const t = suite();

async function untilReady(subscription: Subscription): Promise<Event[]> {
  const events: Event[] = [];
  for (;;) {
    const event = await nextEvent(subscription);
    if (event.body.case === "ready") return events;
    events.push(event);
  }
}

function change(event: Event) {
  assert.equal(event.body.case, "change");
  return event.body.value;
}

test("snapshot, then live changes", async () => {
  const table = await createTable(t.env.db);
  await t.env.db.query(
    `INSERT INTO ${table} (id, name, price, tags) VALUES
       (1, 'one', 1.5, '["a"]'), (2, 'two', 2.25, null), (3, 'three', null, '{"k": 1}')`,
  );
  const subscription = await t.client.subscribeTable(table, { includeInitial: true });
  const initial = await untilReady(subscription);
  await subscription.ready;
  assert.deepEqual(new Set(initial.map((e) => change(e).kind)), new Set([ChangeKind.INITIAL]));
  const rows = new Map(initial.map((e) => [keyOf(change(e).key), rowToObject(change(e).newRow)]));
  assert.deepEqual(
    rows,
    new Map<unknown, unknown>([
      [1, { id: 1, name: "one", price: "1.5", added: null, tags: ["a"] }],
      [2, { id: 2, name: "two", price: "2.25", added: null, tags: null }],
      [3, { id: 3, name: "three", price: null, added: null, tags: { k: 1 } }],
    ]),
  );

  await t.env.db.query(
    `INSERT INTO ${table} (id, name, added) VALUES (4, 'four', '2026-11-22 10:00:00.123+00')`,
  );
  await t.env.db.query(`UPDATE ${table} SET price = 99999999999999999999.000001 WHERE id = 1`);
  await t.env.db.query(`DELETE FROM ${table} WHERE id = 2`);

  const insert = change(await nextEvent(subscription));
  assert.equal(insert.kind, ChangeKind.INSERT);
  assert.equal(insert.table, table);
  assert.ok(insert.transactionId > 0n && insert.commitTimeMicros > 0n);
  assert.deepEqual(rowToObject(insert.newRow).added, new Date("2026-11-22T10:00:00.123Z"));

  const update = change(await nextEvent(subscription));
  assert.equal(update.kind, ChangeKind.UPDATE);
  assert.equal(rowToObject(update.oldRow).price, "1.5");
  assert.equal(rowToObject(update.newRow).price, "99999999999999999999.000001");

  const deleted = await nextEvent(subscription);
  assert.equal(change(deleted).kind, ChangeKind.DELETE);
  assert.equal(keyOf(change(deleted).key), 2);
  assert.ok(deleted.cursor.length > 0, "changes carry a cursor");
  assert.deepEqual(subscription.lastCursor, deleted.cursor);
});

test("without initial rows, Ready comes first", async () => {
  const table = await createTable(t.env.db);
  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'before')`);
  const subscription = await t.client.subscribeTable(table);
  assert.equal((await nextEvent(subscription)).body.case, "ready");
  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (2, 'after')`);
  const insert = change(await nextEvent(subscription));
  assert.equal(insert.kind, ChangeKind.INSERT);
  assert.deepEqual(rowToObject(insert.newRow), {
    id: 2, name: "after", price: null, added: null, tags: null,
  });
});

test("values of every kind", async () => {
  await t.env.db.query(
    `CREATE TABLE typed (
       id uuid PRIMARY KEY, b boolean, i bigint, small int, d double precision, n numeric,
       t text, raw bytea, at timestamptz, wall timestamp, day date, doc jsonb, list int[])`,
  );
  await t.env.db.query("SELECT feedgate.watch('typed')");
  const subscription = await t.client.subscribeTable("typed");
  await nextEvent(subscription); // ready
  await t.env.db.query(
    `INSERT INTO typed VALUES (
       '6f1c1f43-8e4e-4a3c-9b84-5f8d6f7a2b10', true, -9223372036854775808, 42, 0.25, 'NaN',
       'héllo', '\\x00ff', '1999-12-31 23:59:59.999+00', '2026-01-02 03:04:05.678901',
       '2026-11-22', '{"a": [1, 2.5, null]}', '{1,2,3}')`,
  );
  const row = rowToObject(change(await nextEvent(subscription)).newRow);
  assert.deepEqual(row, {
    id: "6f1c1f43-8e4e-4a3c-9b84-5f8d6f7a2b10",
    b: true,
    i: -9223372036854775808n,
    small: 42,
    d: 0.25,
    n: "NaN",
    t: "héllo",
    raw: new Uint8Array([0x00, 0xff]),
    at: new Date("1999-12-31T23:59:59.999Z"),
    wall: "2026-01-02T03:04:05.678901",
    day: "2026-11-22",
    doc: { a: [1, 2.5, null] },
    list: [1, 2, 3],
  });
});

test("unsubscribe ends iteration", async () => {
  const table = await createTable(t.env.db);
  const subscription = await t.client.subscribeTable(table);
  await nextEvent(subscription); // ready
  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'x')`);
  assert.equal(change(await nextEvent(subscription)).kind, ChangeKind.INSERT);
  await subscription.unsubscribe();
  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (2, 'y')`);
  await t.client.ping();
  const rest: Event[] = [];
  for await (const event of subscription) rest.push(event);
  assert.deepEqual(rest, []);
  assert.equal(subscription.isClosed, true);
  assert.equal(await subscription.closed, undefined);
});
