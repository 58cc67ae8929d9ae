// The materialized-view helper: a Map keyed by primary key, kept live, rebuilt after a reset.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ErrorCode, FeedgateError, type MaterializedView, type ViewChange } from "../src/index.js";
import { createTable, waitUntil, suite } from "./support.js";

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

test("the view rebuilds after a truncate", async () => {
  const table = await createTable(t.env.db);
  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'a'), (2, 'b')`);
  const view = await t.client.materializedView(table);
  await view.waitReady();
  assert.deepEqual([...view.rows.keys()].sort(), [1, 2]);

  await t.env.db.query("BEGIN");
  await t.env.db.query(`TRUNCATE ${table}`);
  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (3, 'c')`);
  await t.env.db.query("COMMIT");
  await waitUntil(() => view.resets === 1);
  await view.waitReady();
  await waitUntil(() => view.size === 1 && view.get(3) !== undefined);
  assert.equal(view.error, undefined);

  await t.env.db.query(`INSERT INTO ${table} (id, name) VALUES (4, 'd')`);
  await waitUntil(() => view.size === 2 && view.get(4)?.name === "d");
});

test("a view of a missing table rejects with NOT_FOUND", async () => {
  await assert.rejects(t.client.materializedView("public.no_such_table"), (error: unknown) => {
    assert.ok(error instanceof FeedgateError);
    assert.equal(error.code, ErrorCode.NOT_FOUND);
    return true;
  });
});
