// The shipped test helpers (@feedgate/client/testing) against the real server: each passing,
// and each failing with a message that says what did arrive. The server and client come from
// the shipped `useFeedgate`, with node:test's hooks.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { col } from "../src/index.js";
import * as fg from "../src/testing/index.js";
import { ExpectationFailed } from "../src/testing/index.js";
import { createDatabase, createTable, dropDatabase, feedgateBin } from "./support.js";
import pg from "pg";

let databaseUrl = "";
let db: pg.Client;
const feedgate = fg.useFeedgate({ before, after }, async () => {
  databaseUrl = await createDatabase();
  db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  return { binary: feedgateBin(), databaseUrl };
});
after(async () => {
  await db.end();
  await dropDatabase(databaseUrl);
});

/** The failure `promise` rejects with (an `ExpectationFailed`), as text. */
async function failure(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ExpectationFailed, `not an ExpectationFailed: ${String(error)}`);
    return error.message;
  }
  assert.fail("the expectation held");
}

/** The failure message with its arrival times (`+12 ms`) made `+N ms`. */
const untimed = (message: string) => message.replace(/\+\d+ ms/g, "+N ms");

const row = (id: number, name: string) => `{added: null, id: ${id}, name: "${name}", price: null, tags: null}`;

test("expect returns the matching change", async () => {
  const table = await createTable(db);
  const sub = await feedgate.client.subscribeTable(table);
  await fg.expect(sub, "READY");
  await db.query(`INSERT INTO ${table} (id, name, price) VALUES (7, 'seven', 7.5)`);
  const got = await fg.expect(sub, { kind: "INSERT", where: { id: 7, price: "7.5" } }, { within: 5_000 });
  assert.equal(got.key, 7);
  assert.deepEqual(got.row, { id: 7, name: "seven", price: "7.5", added: null, tags: null });
  await db.query(`UPDATE ${table} SET name = 'SEVEN' WHERE id = 7`);
  const update = await fg.expect(sub, {
    kind: "update",
    where: { name: (name: unknown) => name === "SEVEN" },
    old: { name: "seven" },
  });
  assert.equal(update.oldRow?.name, "seven");
});

test("expect fails at once on the wrong next event, field by field", async () => {
  const table = await createTable(db);
  const sub = await feedgate.client.subscribeTable(table);
  await sub.ready;
  await db.query(`INSERT INTO ${table} (id, name) VALUES (6, 'six')`);
  const started = Date.now();
  const message = await failure(fg.expect(sub, { kind: "INSERT", where: { id: 7, name: "seven" } }, { within: 30_000 }));
  assert.ok(Date.now() - started < 10_000, "a wrong event fails without waiting out `within`");
  assert.equal(
    untimed(message),
    [
      `subscription ${sub.id} (table ${table}): expected INSERT where {id: 7, name: "seven"}, but the next event was INSERT ${row(6, "six")}`,
      "  id: expected 7, got 6",
      '  name: expected "seven", got "six"',
      "arrived within 30000 ms (2 events):",
      "  +N ms  READY",
      `  +N ms  INSERT ${row(6, "six")}`,
    ].join("\n"),
  );
});

test("expect with skip passes over others, and shows the closest when none matches", async () => {
  const table = await createTable(db);
  const sub = await feedgate.client.subscribeTable(table);
  await sub.ready;
  await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'one'), (2, 'two')`);
  await db.query(`INSERT INTO ${table} (id, name) VALUES (3, 'three')`);
  const got = await fg.expect(sub, ["INSERT", { id: 3 }], { skip: true });
  assert.equal(got.row?.name, "three");
  await db.query(`UPDATE ${table} SET name = 'uno' WHERE id = 1`);
  const message = await failure(fg.expect(sub, ["UPDATE", { id: 1, name: "eins" }], { within: 500, skip: true }));
  assert.match(message, /expected UPDATE where \{id: 1, name: "eins"\}: none of the 1 events matched\n/);
  assert.ok(message.includes(`closest: UPDATE ${row(1, "uno")} (old: ${row(1, "one")})\n  name: expected "eins", got "uno"`), message);
});

test("expect times out saying nothing arrived", async () => {
  const sub = await feedgate.client.subscribeTopic("testing.silent");
  const message = await failure(fg.expect(sub, { kind: "MESSAGE", payload: "x" }, { within: 300 }));
  assert.equal(
    untimed(message),
    `subscription ${sub.id} (topic testing.silent): expected MESSAGE payload "x": nothing arrived\n` +
      "arrived within 300 ms (1 events):\n  +N ms  READY",
  );
});

test("expect matches topic messages by their JSON payload, key or text", async () => {
  const sub = await feedgate.client.subscribeTopic("testing.orders");
  await feedgate.client.publish("testing.orders", '{"order": 7, "tenant": "a"}', { key: "7" });
  const got = await fg.expect(sub, { kind: "MESSAGE", where: { order: 7 }, key: "7" });
  assert.deepEqual(got.payload, { order: 7, tenant: "a" });
  await feedgate.client.publish("testing.orders", "plain text");
  await fg.expect(sub, { kind: "MESSAGE", payload: "plain text" });
});

test("expectSequence in order, and where it went wrong", async () => {
  const table = await createTable(db);
  const sub = await feedgate.client.subscribeTable(table, { includeInitial: true });
  await sub.ready;
  await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'a')`);
  await db.query(`UPDATE ${table} SET name = 'b' WHERE id = 1`);
  await db.query(`DELETE FROM ${table} WHERE id = 1`);
  const got = await fg.expectSequence(sub, [
    "READY",
    ["INSERT", { id: 1, name: "a" }],
    { kind: "UPDATE", where: { name: "b" }, old: { name: "a" } },
    ["DELETE", { id: 1 }],
  ]);
  assert.deepEqual(got.map((each) => each.kind), ["READY", "INSERT", "UPDATE", "DELETE"]);

  await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'a')`);
  await db.query(`UPDATE ${table} SET name = 'b' WHERE id = 1`);
  const message = await failure(fg.expectSequence(sub, [["INSERT", { id: 1 }], ["DELETE", { id: 1 }], ["INSERT", { id: 2 }]]));
  assert.deepEqual(message.split("\n").slice(0, 7), [
    `subscription ${sub.id} (table ${table}): expected 3 events in order; event 2 differs`,
    "  1. ok  INSERT where {id: 1}",
    `         got INSERT ${row(1, "a")}`,
    "  2. NO  DELETE where {id: 1}",
    `         got UPDATE ${row(1, "b")} (old: ${row(1, "a")})`,
    "           kind: expected DELETE, got UPDATE",
    "  3. --  INSERT where {id: 2}",
  ]);
});

test("expectSequence times out listing what is missing", async () => {
  const table = await createTable(db);
  const sub = await feedgate.client.subscribeTable(table);
  await sub.ready;
  await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'a')`);
  const message = await failure(fg.expectSequence(sub, ["INSERT", "INSERT"], { within: 500 }));
  assert.ok(message.includes("expected 2 events in order, 1 arrived\n"), message);
  assert.ok(message.includes("  2. NO  INSERT\n         got nothing\n"), message);
});

test("expectNothing: a filtered subscription does not see another tenant's row", async () => {
  const table = await createTable(db);
  const ours = await feedgate.client.subscribeTable(table, { filter: col("name").eq("tenant-a") });
  await ours.ready;
  await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'tenant-b')`);
  await fg.expectNothing(ours, { for: 300 });
  await db.query(`INSERT INTO ${table} (id, name) VALUES (2, 'tenant-a')`);
  await fg.expect(ours, ["INSERT", { id: 2 }]);
});

test("expectNothing fails naming what arrived, including what the server sent before its end", async () => {
  const table = await createTable(db);
  const sub = await feedgate.client.subscribeTable(table);
  await sub.ready;
  await db.query(`INSERT INTO ${table} (id, name) VALUES (5, 'leak')`);
  const message = await failure(fg.expectNothing(sub, { for: 5_000 }));
  assert.equal(
    message.split("\n")[0],
    `subscription ${sub.id} (table ${table}): expected no event, but INSERT ${row(5, "leak")} arrived`,
  );
  const topic = await feedgate.client.subscribeTopic("testing.late");
  await topic.ready;
  await feedgate.client.publish("testing.late", "late");
  // No time at all: only the closing ping lets the message in.
  assert.match(await failure(fg.expectNothing(topic, { for: 0 })), /expected no event, but MESSAGE testing.late/);
  await db.query(`DELETE FROM ${table} WHERE id = 5`);
  assert.match(
    await failure(fg.expectNothing(sub, { for: 5_000, matching: ["DELETE", { id: 5 }] })),
    /expected no DELETE where \{id: 5\}, but DELETE/,
  );
});

test("a subscription that ends fails the expectation", async () => {
  const sub = await feedgate.client.subscribeTopic("testing.ends");
  await sub.unsubscribe();
  assert.match(await failure(fg.expect(sub, "MESSAGE")), /the subscription ended/);
});

test("waitUntil on a view: a predicate, or the expected rows", async () => {
  const table = await createTable(db);
  await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'a'), (2, 'b')`);
  const view = await feedgate.client.materializedView(table);
  const rows = await fg.waitUntil(view, (rows) => rows.size === 2, { within: 5_000 });
  assert.deepEqual([...rows.keys()].sort(), [1, 2]);
  await db.query(`UPDATE ${table} SET name = 'B' WHERE id = 2`);
  await db.query(`INSERT INTO ${table} (id, name, price) VALUES (3, 'c', 1)`);
  await fg.waitUntil(view, (rows) => rows.get(3)?.price === "1" && rows.get(2)?.name === "B");
  await fg.waitUntil(view, new Map([[1, { name: "a" }], [2, { name: "B" }], [3, { name: "c", price: "1" }]]));
  await fg.waitUntil(view, { 1: { name: "a" }, 2: { name: "B" }, 3: { name: "c" } });
  await view.close();
});

test("waitUntil fails with the rows, the last error, and a diff of expected rows", async () => {
  const table = await createTable(db);
  await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'a'), (2, 'b'), (4, 'd')`);
  const view = await feedgate.client.materializedView(table);
  const thrown = await failure(
    fg.waitUntil(view, (rows) => rows.get(9)!.name === "z", { within: 300 }),
  );
  assert.equal(
    thrown,
    [
      `view of ${table}: the condition \`(rows) => rows.get(9).name === "z"\` did not hold within 300 ms`,
      "  the condition threw TypeError: Cannot read properties of undefined (reading 'name')",
      "rows now (3):",
      `  1: ${row(1, "a")}`,
      `  2: ${row(2, "b")}`,
      `  4: ${row(4, "d")}`,
    ].join("\n"),
  );
  const diff = await failure(
    fg.waitUntil(view, { 1: { name: "a" }, 2: { name: "B", colour: "red" }, 3: { name: "c" } }, { within: 300 }),
  );
  assert.ok(
    diff.startsWith(
      [
        `view of ${table}: the expected rows did not hold within 300 ms`,
        "  the rows differ (- expected, + in the view):",
        '    2.name: expected "B", got "b"',
        '    2.colour: expected "red", no such column',
        '  - "3": {name: "c"}',
        `  + 4: ${row(4, "d")}`,
        "rows now (3):",
      ].join("\n"),
    ),
    diff,
  );
  await view.close();
});

test("expectations hold across a server restart (the subscription resumes)", async () => {
  const server = await fg.startServer({ binary: feedgateBin(), databaseUrl });
  const client = await server.connect({ reconnect: { initialDelayMs: 20, maxDelayMs: 500 } });
  try {
    const table = await createTable(db);
    const sub = await client.subscribeTable(table);
    await sub.ready;
    await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'before')`);
    await fg.expect(sub, ["INSERT", { id: 1 }], { within: 10_000 });
    await server.kill();
    await db.query(`INSERT INTO ${table} (id, name) VALUES (2, 'while down')`);
    await server.restart();
    await db.query(`INSERT INTO ${table} (id, name) VALUES (3, 'after')`);
    await fg.expectSequence(sub, [["INSERT", { id: 2 }], ["INSERT", { id: 3 }]], { within: 30_000 });
    await fg.expectNothing(sub, { for: 200 });
    assert.ok(server.log.some((line) => line.startsWith("--- @feedgate/client/testing: restarted on")));
  } finally {
    await client.close();
    await server.stop();
  }
});

test("withLog: a failing test's error carries what the server logged while it ran", async () => {
  const server = await fg.startServer({ binary: feedgateBin(), logLevel: "debug,sqlx=warn" });
  try {
    const failing = fg.withServerLog(
      () => server,
      async () => {
        const client = await server.connect(); // the server logs the session
        await client.close();
        assert.equal(1, 2, "the test's own failure");
      },
    );
    const error = await failing().then(
      () => assert.fail("the wrapped test passed"),
      (thrown: unknown) => thrown,
    );
    assert.ok(error instanceof assert.AssertionError, String(error));
    const message = error.message;
    assert.match(message, /the test's own failure/);
    assert.match(message, /-+ feedgate server log \(127\.0\.0\.1:\d+, during this test\) -+/);
    assert.ok(message.includes("session started"), message);
    assert.ok(!message.includes(server.log[0]!), "only the lines of the test's own time");
    // A passing test is untouched, and so is useFeedgate's wrapper.
    await fg.withServerLog(() => server, async () => {})();
    await feedgate.withLog(async () => {})();
  } finally {
    await server.stop();
  }
});

test("startServer reports a missing binary and a server that cannot start", async () => {
  await assert.rejects(fg.startServer({ binary: "/nonexistent/feedgate" }), {
    name: "ServerError",
    message: /no feedgate binary at \/nonexistent\/feedgate/,
  });
  await assert.rejects(fg.startServer({ binary: feedgate.server.options.binary, config: { no_such_section: { x: 1 } } }), {
    name: "ServerError",
    message: /feedgate did not start \(it exited with \d+\)/,
  });
});
