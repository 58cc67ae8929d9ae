// Squashing (minIntervalMs) against a real server: a squashed topic delivers its first message
// at once, then a window's messages as one batch, one per key; a squashed, filtered view ends
// equal to the table after fewer changes than were made, each batch applied whole; a batch cut
// by a dropped connection is dropped and comes again after the resume.
import assert from "node:assert/strict";
import { test } from "node:test";

import type { Batch } from "../src/batch.js";
import {
  ChangeKind,
  Client,
  col,
  type ConnectionState,
  ErrorCode,
  type Event,
  FeedgateError,
  type Key,
  keyOf,
  rowToObject,
  type Subscription,
  type ViewChange,
} from "../src/index.js";
import { Proxy } from "./proxy.js";
import { createTable, nextEvent, suite, waitUntil } from "./support.js";

const t = suite();

/** Long enough that a test's quick writes all fall into one window, on a busy machine too. */
const INTERVAL_MS = 2000;

const text = (data: Uint8Array) => new TextDecoder().decode(data);

function payload(event: Event): string | undefined {
  return event.body.case === "message" ? text(event.body.value.payload) : undefined;
}

test("a squashed topic sends the first message at once, then the window's as one batch", async () => {
  const topic = "ts.squash.prices";
  const received: [string, boolean, string][] = [];
  const subscription = await t.client.subscribeTopic(topic, {
    minIntervalMs: INTERVAL_MS,
    onEvent: (event) => {
      const body = payload(event);
      if (body !== undefined) received.push([body, event.more, text(subscription.lastCursor)]);
    },
  });
  const iterated = await t.client.subscribeTopic(topic, { minIntervalMs: INTERVAL_MS });
  const published = new Map<string, string>();
  const messages: [string, string][] = [["1", "k1"], ["2", "k1"], ["3", "k2"], ["4", ""], ["5", "k1"], ["6", ""]];
  for (const [body, key] of messages) {
    published.set(body, text((await t.client.publish(topic, body, { key })).cursor));
  }
  await t.client.ping();
  assert.deepEqual(received.map(([body]) => body), ["1"], "the first message goes at once");
  await waitUntil(() => received.length === 5, INTERVAL_MS + 10_000);
  // k1's 2 collapsed into its 5, which takes the place of k1's latest message; messages without
  // a key are all kept. The batch came whole: while its first event was delivered, the
  // subscription's position was already the batch's last event's.
  const end = published.get("6")!;
  assert.deepEqual(received, [
    ["1", false, published.get("1")],
    ["3", true, end],
    ["4", true, end],
    ["5", true, end],
    ["6", false, end],
  ]);

  const events: Event[] = [];
  while (events.length < 5) {
    const event = await nextEvent(iterated, INTERVAL_MS + 10_000);
    if (payload(event) === undefined) continue;
    events.push(event);
    // At the batch's first event, the iterator's position is the batch's end already.
    if (events.length === 2) assert.equal(text(iterated.lastCursor), end);
  }
  assert.deepEqual(events.map(payload), ["1", "3", "4", "5", "6"]);
  assert.deepEqual(events.map((event) => event.more), [false, true, true, true, false]);
  await subscription.unsubscribe();
  await iterated.unsubscribe();
});

test("a squashed, filtered view collapses a row's changes and ends equal to the table", async () => {
  const table = await createTable(t.env.db);
  await t.env.db.query(`INSERT INTO ${table} (id, name, price) VALUES (1, 'a', 1), (2, 'b', 1), (3, 'c', 1)`);
  const changes: [string, Key, number | undefined, boolean, Record<string, number>][] = [];
  const prices = (): Record<string, number> =>
    Object.fromEntries([...view.rows].map(([key, row]) => [String(key), Number(row.price)]));
  const view = await t.client.materializedView(table, {
    filter: col("price").lt(100),
    minIntervalMs: INTERVAL_MS,
    onChange: (kind, key, _row, change: ViewChange) => {
      if (kind === "initial") return;
      // The rows as the application sees them when told of the change.
      const old = change.oldRow === undefined ? undefined : Number(change.oldRow.price);
      changes.push([kind, key, old, change.more, prices()]);
    },
  });
  await view.waitReady();
  const statements = [
    `UPDATE ${table} SET price = 2 WHERE id = 1`, // sent at once; opens the window
    `UPDATE ${table} SET price = 3 WHERE id = 1`,
    `UPDATE ${table} SET price = 4 WHERE id = 1`,
    `INSERT INTO ${table} (id, name, price) VALUES (10, 'x', 1)`,
    `DELETE FROM ${table} WHERE id = 10`, // inserted and deleted: nothing
    `UPDATE ${table} SET price = 500 WHERE id = 2`, // out of the filter...
    `UPDATE ${table} SET price = 5 WHERE id = 2`, // ... and back in: an update
    `UPDATE ${table} SET name = 'c2' WHERE id = 3`,
  ];
  for (const statement of statements) await t.env.db.query(statement);
  await waitUntil(() => changes.length === 4, INTERVAL_MS + 10_000);
  const result = await t.env.db.query(`SELECT id, name, price FROM ${table} WHERE price < 100 ORDER BY id`);
  const want = result.rows.map((r) => [Number(r.id), r.name, Number(r.price)]);
  const have = [...view.rows.values()]
    .map((row) => [Number(row.id), row.name, Number(row.price)])
    .sort((a, b) => (a[0] as number) - (b[0] as number));
  assert.deepEqual(have, want);
  const final = { "1": 4, "2": 5, "3": 1 };
  assert.deepEqual(changes, [
    ["update", 1, 1, false, { "1": 2, "2": 1, "3": 1 }],
    // One batch, in the order of each row's latest change; oldRow is the row as the view had
    // it; the view held the whole batch before onChange heard of any of it.
    ["update", 1, 2, true, final],
    ["update", 2, 1, true, final],
    ["update", 3, 1, false, final],
  ]);
  await t.client.ping();
  assert.equal(changes.length, 4, `${statements.length} changes reached the view as 4`);
  await view.close();
});

test("minIntervalMs is passed on, and checked as far as the protocol can carry it", async () => {
  const table = await createTable(t.env.db);
  await assert.rejects(t.client.subscribeTable(table, { minIntervalMs: -1 }), RangeError);
  await assert.rejects(t.client.subscribeTopic("ts.squash.x", { minIntervalMs: 1.5 }), RangeError);
  await assert.rejects(
    t.client.subscribeTopic("ts.squash.x", { minIntervalMs: 60_001 }),
    (error: unknown) => error instanceof FeedgateError && error.code === ErrorCode.VALIDATION,
  );
  const subscription = await t.client.subscribeTable(table, { minIntervalMs: 60_000 });
  // Ready before unsubscribing: an unsubscribe while the server takes the subscription's
  // snapshot can leave a pooled database connection inside a transaction (a server bug, sqlx
  // 0.8.6's cancelled begin()), which fails a later snapshot of this file's server.
  await subscription.ready;
  await subscription.unsubscribe();
});

/** A table subscription's rows rebuilt from its events, recording every UPDATE or DELETE whose
 * `oldRow` is not the row it holds: what a partial batch kept across a resume (or one applied
 * without the rest) would lead to. */
class Model {
  readonly rows = new Map<Key, string>();
  readonly mismatches: [Key, string | undefined, string][] = [];
  changes = 0;
  readies = 0;

  readonly onEvent = (event: Event): void => {
    if (event.body.case === "ready") this.readies += 1;
    if (event.body.case !== "change") return;
    this.changes += 1;
    const change = event.body.value;
    const key = keyOf(change.key);
    const json = (row: typeof change.newRow): string => {
      const entries = Object.entries(rowToObject(row)).sort(([a], [b]) => (a < b ? -1 : 1));
      return JSON.stringify(entries.map(([name, value]) => [name, String(value)]));
    };
    if (change.kind === ChangeKind.UPDATE || change.kind === ChangeKind.DELETE) {
      const old = json(change.oldRow);
      if (this.rows.get(key) !== old) this.mismatches.push([key, this.rows.get(key), old]);
    }
    if (change.kind === ChangeKind.DELETE) this.rows.delete(key);
    else this.rows.set(key, json(change.newRow));
  };

  versions(): Record<string, number> {
    const version = (row: string): number => Number(new Map(JSON.parse(row) as [string, string][]).get("version"));
    return Object.fromEntries([...this.rows].map(([key, row]) => [String(key), version(row)]));
  }
}

test("a batch cut by a dropped connection is dropped, and comes again after the resume", async () => {
  const table = `counters_${process.pid}`;
  // Rows of ~300 bytes: the batch spans several frames even in bundles (at most 64 KiB each).
  await t.env.db.query(`CREATE TABLE ${table} (id bigint PRIMARY KEY, version bigint NOT NULL, pad text)`);
  await t.env.db.query(`INSERT INTO ${table} SELECT g, 1, repeat('x', 300) FROM generate_series(1, 500) g`);
  await t.env.db.query("SELECT feedgate.watch($1)", [`public.${table}`]);
  const proxy = await Proxy.start(t.env.server.addr);
  const model = new Model();
  const states: ConnectionState[] = [];
  const heldAtTheCut: number[] = [];
  let subscription: Subscription | undefined;
  const client = await Client.connect(proxy.url, {
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
    onStateChange: (state) => {
      states.push(state);
      const batch = (subscription as unknown as { batch: Batch } | undefined)?.batch;
      if (state === "reconnecting") heldAtTheCut.push(batch?.size ?? -1);
    },
  });
  try {
    subscription = await client.subscribeTable(`public.${table}`, {
      includeInitial: true,
      minIntervalMs: INTERVAL_MS,
      onEvent: model.onEvent,
    });
    await waitUntil(() => model.readies === 1);
    await t.env.db.query(`UPDATE ${table} SET version = version + 1 WHERE id = 1`);
    await waitUntil(() => model.changes === 501); // the lone first change
    // Within the window: 500 rows change, sent as one batch when it ends. The proxy cuts the
    // connection inside a chunk of it past its first bundle.
    await t.env.db.query(`UPDATE ${table} SET version = version + 1`);
    await proxy.cutMidFrame(100_000);
    await waitUntil(() => states.filter((state) => state === "open").length === 2, INTERVAL_MS + 20_000);
    const want: Record<string, number> = {};
    for (let id = 1; id <= 500; id++) want[String(id)] = id === 1 ? 3 : 2;
    await waitUntil(() => JSON.stringify(model.versions()) === JSON.stringify(want), 20_000);
    await client.ping();
    assert.equal(subscription.isClosed, false);
  } finally {
    await client.close();
    await proxy.close();
  }
  assert.ok(heldAtTheCut.length === 1 && heldAtTheCut[0]! > 0, `the cut fell inside the batch: ${heldAtTheCut}`);
  assert.equal(model.changes, 501 + 500, "none of the cut batch was delivered before the resume");
  assert.deepEqual(model.mismatches, []);
  assert.equal(model.readies, 1);
});
