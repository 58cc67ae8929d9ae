// The catalog through the client: watched tables with their columns' types and kinds, topic
// routes, and only what the token's permissions allow.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, TopicBackend, ValueKind } from "../src/index.js";
import { configFile, createTable, type Environment, environment } from "./support.js";

let env: Environment;
let table: string;

before(async () => {
  env = await environment({ extra: ["--demo"] });
  table = await createTable(env.db);
});
after(async () => env?.close());

test("the catalog lists watched tables with column types and kinds, and topic routes", async () => {
  const client = await Client.connect(env.server.url);
  try {
    const catalog = await client.catalog();
    assert.equal(catalog.database, true);
    assert.equal(catalog.tablesError, undefined);
    const items = catalog.tables.find((t) => t.table === table);
    assert.ok(items, `${table} in ${catalog.tables.map((t) => t.table).join(", ")}`);
    assert.deepEqual(items.primaryKey, ["id"]);
    assert.equal(items.rowFiltered, false);
    assert.deepEqual(
      items.columns.map((c) => [c.name, c.type, c.kind]),
      [
        ["id", "bigint", ValueKind.INT],
        ["name", "text", ValueKind.TEXT],
        ["price", "numeric", ValueKind.NUMERIC],
        ["added", "timestamp with time zone", ValueKind.TIMESTAMP_MICROS],
        ["tags", "jsonb", ValueKind.JSON],
      ],
    );
    assert.equal(catalog.topics.length, 1);
    const route = catalog.topics[0]!;
    assert.equal(route.pattern, "#");
    assert.equal(route.backend, TopicBackend.MEMORY);
    assert.equal(route.history, true);
    assert.equal(route.resume, true);
    assert.equal(route.subscribeAll, true);
    assert.equal(route.publish, true);
    // --demo publishes on demo.prices, which the in-process broker keeps.
    for (let n = 0; n < 50 && !(await client.catalog()).topics[0]!.knownTopics.includes("demo.prices"); n++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok((await client.catalog()).topics[0]!.knownTopics.includes("demo.prices"));
  } finally {
    await client.close();
  }
});

test("the catalog shows only what the permissions allow", async () => {
  const restricted = await environment({
    anonymous: true,
    extra: [
      "--config",
      configFile(`
[[permissions]]
roles = ["*"]
subscribe_topics = ["public.#"]
subscribe_tables = ["${table}"]
`),
    ],
  });
  try {
    const hidden = await createTable(restricted.db);
    const shown = table;
    await restricted.db.query(`CREATE TABLE ${shown} (id int PRIMARY KEY, ok boolean)`);
    await restricted.db.query("SELECT feedgate.watch($1)", [shown]);
    const client = await Client.connect(restricted.server.url);
    const catalog = await client.catalog();
    await client.close();
    assert.deepEqual(catalog.tables.map((t) => t.table), [shown]);
    assert.ok(!catalog.tables.some((t) => t.table === hidden));
    assert.deepEqual(catalog.tables[0]!.columns.map((c) => c.kind), [ValueKind.INT, ValueKind.BOOL]);
    assert.equal(catalog.topics.length, 1);
    assert.equal(catalog.topics[0]!.subscribeAll, false);
    assert.equal(catalog.topics[0]!.publish, false);
  } finally {
    await restricted.close();
  }
});
