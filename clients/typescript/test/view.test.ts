// The materialized-view helper: a Map keyed by primary key, kept live, rebuilt after a reset.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, ErrorCode, FeedgateError, type MaterializedView, type ViewChange } from "../src/index.js";
import { Proxy } from "./proxy.js";
import { createTable, suite, TEST_TIMEOUT, waitUntil, within } from "./support.js";

const t = suite();

async function tableState(table: string): Promise<string> {
  const result = await t.env.db.query(`SELECT id, name, price FROM ${table} ORDER BY id`);
  return JSON.stringify(result.rows.map((r) => [Number(r.id), r.name, r.price]));
}

function viewState(view: MaterializedView): string {
  const rows = [...view.rows.values()].sort((a, b) => Number(a.id) - Number(b.id));
  return JSON.stringify(rows.map((r) => [r.id, r.name, r.price]));
}

test("the view follows the table", async () => {
  const table = await createTable(t.env.db);
  await t.env.db.query(
    `INSERT INTO ${table} (id, name, price) SELECT g, 'row ' || g, g * 1.5 FROM generate_series(1, 500) g`,
  );
  const changes: [string, unknown, unknown, ViewChange][] = [];
  const view = await t.client.materializedView(table, {
    onChange: (kind, key, row, change) => changes.push([kind, key, row, change]),
  });
  await view.waitReady();
  assert.equal(view.size, 500);
  assert.equal(viewState(view), await tableState(table));
  assert.equal(view.get(7)?.price, "10.5");

  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (1000, 'new')`);
  await t.env.db.query(`UPDATE ${table} SET name = 'renamed' WHERE id <= 10`);
  await t.env.db.query(`UPDATE ${table} SET id = 2000 WHERE id = 20`); // the primary key changes
  await t.env.db.query(`DELETE FROM ${table} WHERE id BETWEEN 100 AND 199`);
  const expected = await tableState(table);
  await waitUntil(() => viewState(view) === expected);
  assert.equal(view.get(20), undefined);
  assert.equal(view.get(2000)?.name, "row 20");
  assert.ok(changes.some(([kind, key, row]) => kind === "delete" && key === 150 && row === undefined));
  assert.equal(changes.filter(([kind]) => kind === "initial").length, 500);
  // The fourth argument carries the rest of the event.
  const deleted = changes.find(([kind, key]) => kind === "delete" && key === 150)![3];
  assert.equal(deleted.oldRow?.name, "row 150");
  assert.equal(deleted.row, undefined);
  assert.ok(deleted.transactionId > 0n && deleted.commitTime instanceof Date);
  assert.ok(deleted.cursor.length > 0);
  const initial = changes.find(([kind]) => kind === "initial")![3];
  assert.equal(initial.oldRow, undefined);
  assert.equal(initial.commitTime, undefined);

  await view.close();
  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (3000, 'after close')`);
  await t.client.ping();
  assert.equal(view.get(3000), undefined);
});

/** Reads something of a view every millisecond (and whenever `sample()` is called) until
 * stopped; nothing while `read` returns undefined. */
function sampler<T>(read: () => T | undefined) {
  const samples: T[] = [];
  const sample = () => {
    const value = read();
    if (value !== undefined) samples.push(value);
  };
  const timer = setInterval(sample, 1);
  return { samples, sample, stop: () => clearInterval(timer) };
}

const keys = (view: MaterializedView) => JSON.stringify([...view.rows.keys()].sort((a, b) => Number(a) - Number(b)));

test("the view rebuilds after a truncate: old rows until the new snapshot, one reset", TEST_TIMEOUT, async () => {
  const table = await createTable(t.env.db);
  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'a'), (2, 'b')`);
  const resets: [FeedgateError, string][] = [];
  let view: MaterializedView | undefined;
  const watch = sampler(() => view && keys(view));
  view = await t.client.materializedView(table, {
    onReset: (reason) => resets.push([reason, keys(view!)]),
  });
  await view.waitReady();
  assert.deepEqual([...view.rows.keys()].sort(), [1, 2]);

  await t.env.db.query("BEGIN");
  await t.env.db.query(`TRUNCATE ${table}`);
  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (3, 'c')`);
  await t.env.db.query("COMMIT");
  await waitUntil(() => view!.resets === 1);
  await view.waitReady();
  await waitUntil(() => view!.size === 1 && view!.get(3) !== undefined);
  assert.equal(view.error, undefined);
  assert.equal(resets.length, 1);
  assert.equal(resets[0]![0].code, ErrorCode.SOURCE_RESET);
  assert.equal(resets[0]![1], "[3]", "onReset comes after the swap");

  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (4, 'd')`);
  await waitUntil(() => view!.size === 2 && view!.get(4)?.name === "d");
  watch.stop();
  // Empty only before the first snapshot was complete; then the old rows until the swap, then
  // the new ones: never a mix, never back.
  const order = ["[]", "[1,2]", "[3]", "[3,4]"];
  const shown = watch.samples.filter((state, n) => state !== watch.samples[n - 1]);
  const steps = shown.map((state) => order.indexOf(state));
  assert.ok(steps.every((step, n) => step >= 0 && (n === 0 || step > steps[n - 1]!)), `the view showed ${shown.join(" ")}`);
  assert.ok(shown.includes("[1,2]") && shown.includes("[3,4]"));
  assert.equal(resets.length, 1);
});

test("a view cut during its first snapshot rebuilds: empty until complete, one reset, equal to the table", TEST_TIMEOUT, async () => {
  const table = await createTable(t.env.db);
  const total = 5000;
  // About 5 MB: far more than the sockets hold, so the cut lands inside the snapshot.
  await t.env.db.query(
    `INSERT INTO ${table} (id, name, price) SELECT g, repeat('v', 1000), g FROM generate_series(1, ${total}) g`,
  );
  const proxy = await Proxy.start(t.env.server.addr);
  const client = await Client.connect(proxy.url, { reconnect: { initialDelayMs: 20, maxDelayMs: 200 } });
  let view: MaterializedView | undefined;
  const watch = sampler(() => view?.size);
  let initial = 0;
  const resets: [FeedgateError, number][] = [];
  view = await client.materializedView(table, {
    onChange: (kind) => {
      watch.sample();
      if (kind === "initial" && initial++ === 0) proxy.cut();
    },
    onReset: (reason) => resets.push([reason, view!.size]),
  });
  await within(view.waitReady(), "the rebuilt view");
  watch.stop();
  watch.sample();

  assert.ok(initial >= 1 && initial < total, `the first snapshot was cut (${initial} of ${total} rows)`);
  assert.equal(resets.length, 1, "onReset once");
  assert.equal(resets[0]![0].code, ErrorCode.RESUME_UNAVAILABLE);
  assert.equal(resets[0]![1], total, "onReset after the swap");
  assert.equal(view.resets, 1);
  assert.equal(viewState(view), await tableState(table));
  // Empty before the first complete snapshot, then all of it: never part of one.
  assert.deepEqual([...new Set(watch.samples)].filter((size) => size !== 0 && size !== total), []);
  assert.ok(watch.samples.includes(0) && watch.samples.includes(total), "sampled before and after");

  await t.env.db.query(`UPDATE ${table} SET name = 'after' WHERE id = 1`);
  await waitUntil(() => view!.get(1)?.name === "after");
  await client.close();
  await proxy.close();
});

test("a view of a missing table rejects with NOT_FOUND", async () => {
  await assert.rejects(t.client.materializedView("public.no_such_table"), (error: unknown) => {
    assert.ok(error instanceof FeedgateError);
    assert.equal(error.code, ErrorCode.NOT_FOUND);
    return true;
  });
});
