// Filters built with col, path, key and header: a filtered view holds exactly the matching rows
// while rows move in and out; a topic subscription gets only matching messages; columns keep
// only the asked ones; a filter the server cannot use is refused with VALIDATION.
import assert from "node:assert/strict";
import { test } from "node:test";

import { col, ErrorCode, FeedgateError, header, key, numeric, path, type pb } from "../src/index.js";
import { createTable, suite, waitUntil } from "./support.js";

const t = suite();

test("a filtered view holds exactly the matching rows while rows cross the filter", async () => {
  const table = await createTable(t.env.db);
  await t.env.db.query(
    `INSERT INTO ${table} (id, name, price) SELECT g, 'row ' || g, g * 1.5 FROM generate_series(1, 100) g`,
  );
  const cheap = col("price").lt(numeric("60")).and(col("name").startsWith("row 1").not());
  const view = await t.client.materializedView(table, { filter: cheap });
  await view.waitReady();
  const matching = async (): Promise<string> => {
    const result = await t.env.db.query(
      `SELECT id FROM ${table} WHERE price < 60 AND name NOT LIKE 'row 1%' ORDER BY id`,
    );
    return JSON.stringify(result.rows.map((r) => Number(r.id)));
  };
  const ids = (): string => JSON.stringify([...view.rows.keys()].map(Number).sort((a, b) => a - b));
  assert.equal(ids(), await matching());
  await t.env.db.query(`UPDATE ${table} SET price = 1 WHERE id BETWEEN 80 AND 85`); // in
  await t.env.db.query(`UPDATE ${table} SET price = 99 WHERE id BETWEEN 20 AND 25`); // out
  await t.env.db.query(`UPDATE ${table} SET name = 'row 1x' WHERE id = 30`); // out
  await t.env.db.query(`INSERT INTO ${table} (id, name, price) VALUES (500, 'new', 2)`); // in
  const want = await matching();
  await waitUntil(() => ids() === want);
  await view.close();
});

test("a topic subscription gets only the messages its filter matches", async () => {
  const received: number[] = [];
  const filter = path("commodity")
    .eq("oil")
    .and(path("regions").eq("north_sea"))
    .or(key().eq("special"), header("desk").eq("gulf"));
  const subscription = await t.client.subscribeTopic("ts.ticks", {
    filter,
    onEvent: (event: pb.Event) => {
      if (event.body.case === "message") {
        received.push(JSON.parse(new TextDecoder().decode(event.body.value.payload)).n);
      }
    },
  });
  const ticks: [number, object, string, Record<string, string>][] = [
    [1, { commodity: "oil", regions: ["north_sea", "gulf"] }, "", {}],
    [2, { commodity: "gas", regions: ["north_sea"] }, "", {}],
    [3, { commodity: "gas" }, "special", {}],
    [4, { commodity: "coal" }, "", { desk: "gulf" }],
    [5, { commodity: "oil", regions: [] }, "", {}],
  ];
  for (const [n, body, messageKey, headers] of ticks) {
    await t.client.publish("ts.ticks", JSON.stringify({ n, ...body }), { key: messageKey, headers });
  }
  await t.client.publish("ts.ticks", "not json");
  await t.client.ping();
  assert.deepEqual(received, [1, 3, 4]);
  await subscription.unsubscribe();
});

test("columns keep only the asked ones, and a filter the server cannot use is refused", async () => {
  const table = await createTable(t.env.db);
  await t.env.db.query(`INSERT INTO ${table} (id, name, price) VALUES (1, 'a', 1)`);
  const view = await t.client.materializedView(table, { columns: ["name"] });
  await view.waitReady();
  assert.deepEqual(Object.keys(view.get(1) ?? {}).sort(), ["id", "name"]);
  await view.close();
  await assert.rejects(
    t.client.subscribeTable(table, { filter: col("nope").eq(1) }),
    (err: unknown) =>
      err instanceof FeedgateError && err.code === ErrorCode.VALIDATION && err.message.includes("column nope"),
  );
  await assert.rejects(
    t.client.subscribeTopic("ts.ticks", { filter: col("id").eq(1) }),
    (err: unknown) => err instanceof FeedgateError && err.message.includes("payload path"),
  );
  assert.throws(() => col("price").eq(null as unknown as string), TypeError);
  await t.client.ping();
});
