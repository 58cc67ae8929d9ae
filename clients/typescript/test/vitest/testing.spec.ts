// @feedgate/client/testing under Vitest, imported as users import it (the package's own
// exports map): a server from `useFeedgate` with Vitest's hooks, the assertions passing and
// failing inside Vitest's own `expect`.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import pg from "pg";

import { col } from "@feedgate/client";
import * as fg from "@feedgate/client/testing";
import { createDatabase, createTable, dropDatabase, feedgateBin } from "../support.js";

let databaseUrl = "";
let db: pg.Client;
const feedgate = fg.useFeedgate({ before: beforeAll, after: afterAll }, async () => {
  databaseUrl = await createDatabase();
  db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  return { binary: feedgateBin(), databaseUrl };
});
afterAll(async () => {
  await db.end();
  await dropDatabase(databaseUrl);
});

describe("feedgate testing helpers under Vitest", () => {
  test("an inserted row arrives; another tenant's does not", async () => {
    const table = await createTable(db);
    const ours = await feedgate.client.subscribeTable(table, { filter: col("name").eq("tenant-a") });
    await ours.ready;
    await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'tenant-b'), (2, 'tenant-a')`);
    const got = await fg.expect(ours, { kind: "INSERT", where: { id: 2 } }, { within: 5_000 });
    expect(got.row).toMatchObject({ id: 2, name: "tenant-a" });
    await fg.expectNothing(ours, { for: 200 });
  });

  test("a failed expectation rejects with what arrived", async () => {
    const table = await createTable(db);
    const sub = await feedgate.client.subscribeTable(table);
    await sub.ready;
    await db.query(`INSERT INTO ${table} (id, name) VALUES (6, 'six')`);
    await expect(fg.expect(sub, ["INSERT", { id: 7 }])).rejects.toThrow(
      /expected INSERT where \{id: 7\}, but the next event was INSERT \{added: null, id: 6, .*\n {2}id: expected 7, got 6/,
    );
  });

  test("waitUntil on a view", async () => {
    const table = await createTable(db);
    const view = await feedgate.client.materializedView(table);
    await db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'a')`);
    await fg.waitUntil(view, { 1: { name: "a" } }, { within: 5_000 });
    await expect(fg.waitUntil(view, (rows) => rows.size === 2, { within: 200 })).rejects.toThrow(
      /did not hold within 200 ms\n {2}the condition returned false\nrows now \(1\):/,
    );
    await view.close();
  });
});
