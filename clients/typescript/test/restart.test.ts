// The server is killed (SIGKILL) and started again on the same port and database: the client
// reconnects by itself; table subscriptions and views resume, in-process topics cannot.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import pg from "pg";

import { Client, type ConnectionState, ErrorCode, type Event, keyOf, type MaterializedView, rowToObject } from "../src/index.js";
import { Proxy } from "./proxy.js";
import {
  adminUrl,
  createDatabase,
  databaseStatus,
  dropDatabase,
  killServer,
  nextEvent,
  type Server,
  startServer,
  stopServer,
  TEST_TIMEOUT,
  waitForDatabase,
  waitUntil,
  within,
} from "./support.js";

/** Patient enough for a restart: a server takes a second or so to come back. */
const RESTART = { initialDelayMs: 50, maxDelayMs: 500 };

let databaseUrl: string;
let db: pg.Client;
const servers: Server[] = [];
const clients: Client[] = [];

before(async () => {
  databaseUrl = await createDatabase();
  await stopServer(await startServer(databaseUrl)); // applies the migrations (feedgate.watch)
  db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
});

after(async () => {
  for (const client of clients) await client.close();
  for (const server of servers) await stopServer(server);
  await db?.end();
  if (databaseUrl !== undefined) await dropDatabase(databaseUrl);
});

async function start(options: Parameters<typeof startServer>[1] = {}, url = databaseUrl): Promise<Server> {
  const server = await startServer(url, options);
  servers.push(server);
  return server;
}

async function versionedTable(name: string, rows: number): Promise<void> {
  await db.query(`CREATE TABLE ${name} (id bigint PRIMARY KEY, version int NOT NULL)`);
  await db.query("SELECT feedgate.watch($1)", [`public.${name}`]);
  await db.query(`INSERT INTO ${name} SELECT g, 1 FROM generate_series(1, ${rows}) g`);
}

async function tableVersions(name: string): Promise<Map<number, number>> {
  const result = await db.query(`SELECT id, version FROM ${name}`);
  return new Map(result.rows.map((row) => [Number(row.id), Number(row.version)]));
}

function viewVersions(view: MaterializedView): Map<number, number> {
  return new Map([...view.rows].map(([key, row]) => [Number(key), Number(row.version)]));
}

const same = (a: Map<number, number>, b: Map<number, number>) =>
  a.size === b.size && [...a].every(([id, version]) => b.get(id) === version);

/** A writer on a connection of its own: updates rows 1..20 and inserts one row in five;
 * `pause()` resolves once its last statement is committed. */
function writer(table: string) {
  const connection = new pg.Client({ connectionString: databaseUrl });
  let commits = 0;
  let running = true;
  let paused: (() => void) | undefined;
  let resume: (() => void) | undefined;
  const done = (async () => {
    await connection.connect();
    while (running) {
      if (paused !== undefined) {
        paused();
        paused = undefined;
        await new Promise<void>((resolve) => (resume = resolve));
        continue;
      }
      if (commits % 5 === 4) {
        await connection.query(`INSERT INTO ${table} VALUES ($1, 1)`, [1000 + commits]);
      } else {
        await connection.query(`UPDATE ${table} SET version = version + 1 WHERE id = $1`, [1 + (commits % 20)]);
      }
      commits += 1;
    }
    await connection.end();
  })();
  return {
    get commits() {
      return commits;
    },
    pause: () => new Promise<void>((resolve) => (paused = resolve)),
    resume: () => resume?.(),
    stop: async () => {
      running = false;
      resume?.();
      await done;
    },
  };
}

/** Every row's versions, in the order the changes arrived. */
function versionsSeen(events: Event[]): Map<number, number[]> {
  const versions = new Map<number, number[]>();
  for (const event of events) {
    if (event.body.case !== "change") continue;
    const id = Number(keyOf(event.body.value.key));
    versions.set(id, [...(versions.get(id) ?? []), Number(rowToObject(event.body.value.newRow).version)]);
  }
  return versions;
}

test("SIGKILL and restart on the same port: tables and views resume, a memory topic ends RESUME_UNAVAILABLE", TEST_TIMEOUT, async () => {
  await versionedTable("restarted", 20);
  const server = await start();
  const states: ConnectionState[] = [];
  const client = await Client.connect(server.url, { reconnect: RESTART, onStateChange: (state) => states.push(state) });
  clients.push(client);
  const changes: Event[] = [];
  const rows = await client.subscribeTable("public.restarted", { onEvent: (event) => changes.push(event) });
  let resets = 0;
  const view = await client.materializedView("public.restarted", { onReset: () => resets++ });
  const topic = await client.subscribeTopic("restart.topic");
  await client.publish("restart.topic", "before the restart");
  assert.equal((await nextEvent(topic)).body.case, "ready");
  assert.equal((await nextEvent(topic)).body.case, "message");
  await within(Promise.all([rows.ready, view.waitReady()]), "Ready");

  const writes = writer("restarted");
  /** The writer stops for a moment; the view must then equal the table. */
  const checkpoint = async (when: string) => {
    await writes.pause();
    const table = await tableVersions("restarted");
    await waitUntil(() => same(viewVersions(view), table), 30_000).catch(() => {
      throw new Error(`${when}: the view differs from the table`);
    });
    writes.resume();
  };
  await waitUntil(() => writes.commits > 30);
  await checkpoint("before the restart");

  await killServer(server);
  await waitUntil(() => client.state === "reconnecting");
  const down = writes.commits;
  await waitUntil(() => writes.commits > down + 30); // rows change while the server is down
  const restarted = await start({ listen: server.addr });
  await waitUntil(() => client.state === "open", 30_000);

  // The in-process topic's history died with the process: its cursor is from another run.
  const error = await within(topic.closed, "the topic subscription's end");
  assert.equal(error?.code, ErrorCode.RESUME_UNAVAILABLE, String(error));
  assert.match(error!.message, /another run/);

  const up = writes.commits;
  await waitUntil(() => writes.commits > up + 30);
  await checkpoint("after the restart");
  await within(writes.stop(), "the writer's end");

  const table = await tableVersions("restarted");
  await waitUntil(() => {
    const seen = versionsSeen(changes);
    return [...table].every(([id, version]) => (seen.get(id)?.at(-1) ?? 1) === version);
  }, 30_000);
  for (const [id, list] of versionsSeen(changes)) {
    const first = id >= 1000 ? 1 : 2; // inserted rows start at 1; the others were at 1 already
    assert.deepEqual(list, Array.from({ length: list.length }, (_, n) => first + n), `row ${id}: no gap, no duplicate`);
  }
  assert.equal(changes.filter((event) => event.body.case === "ready").length, 1);
  // The view's subscription is another one: it may arrive a moment later.
  await waitUntil(() => same(viewVersions(view), table), 30_000);
  assert.equal(resets, 0, "the view resumed: no rebuild");
  assert.equal(view.isReady, true);
  assert.deepEqual(states, ["connecting", "open", "reconnecting", "open"]);
  assert.equal(rows.isClosed, false);
  await client.close();
  await stopServer(restarted);
});

test("a resubscribe refused as SOURCE_UNAVAILABLE (database not up yet after a restart) is retried", TEST_TIMEOUT, async () => {
  await versionedTable("unavailable", 1);
  const server = await start();
  const client = await Client.connect(server.url, { reconnect: RESTART });
  clients.push(client);
  const changes: Event[] = [];
  const rows = await client.subscribeTable("public.unavailable", { onEvent: (event) => changes.push(event) });
  await within(rows.ready, "Ready");
  await db.query("INSERT INTO unavailable VALUES (2, 1)");
  await waitUntil(() => changes.length === 2);

  // The restarted server reaches PostgreSQL through a proxy that refuses it for now.
  const database = await Proxy.start(new URL(adminUrl).host);
  database.refuse(true);
  const throughProxy = new URL(databaseUrl);
  throughProxy.host = `127.0.0.1:${database.port}`;
  await killServer(server);
  await db.query("INSERT INTO unavailable VALUES (3, 1), (4, 1)");
  const restarted = await start({ listen: server.addr, waitForDatabase: false }, throughProxy.toString());
  await waitUntil(() => client.state === "open", 30_000);
  // Open although the server cannot serve the table yet: the resubscribe was answered, refused.
  assert.notEqual(await databaseStatus(restarted), "connected");
  assert.ok(database.refused > 0, "the server tried to reach the database");
  assert.equal(rows.isClosed, false, "a retryable refusal does not end the subscription");
  await db.query("INSERT INTO unavailable VALUES (5, 1)");

  database.refuse(false);
  await waitForDatabase(restarted);
  await db.query("INSERT INTO unavailable VALUES (6, 1)");
  await waitUntil(() => changes.length === 6, 30_000);
  assert.deepEqual(
    changes.map((event) => (event.body.case === "change" ? Number(keyOf(event.body.value.key)) : event.body.case)),
    ["ready", 2, 3, 4, 5, 6],
  );
  await client.ping(); // nothing else follows
  assert.equal(changes.length, 6);
  await client.close();
  await stopServer(restarted);
  await database.close();
});
