/**
 * Test support: a real feedgate server (the binary built by cargo) with a real PostgreSQL
 * database of its own, and helpers to create watched tables and change them with SQL.
 *
 * The server is $FEEDGATE_BIN, else <repo>/target/debug/feedgate (scripts/test builds it);
 * PostgreSQL is $FEEDGATE_TEST_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres).
 */

import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before } from "node:test";
import pg from "pg";

import { Client, type Event, type Subscription } from "../src/index.js";
import * as testing from "../src/testing/index.js";
import type { Server } from "../src/testing/index.js";

export type { Server };

const here = dirname(fileURLToPath(import.meta.url));
// build/test/support.js -> the repository root is four levels up.
const repo = join(here, "..", "..", "..", "..");
export const adminUrl =
  process.env.FEEDGATE_TEST_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

/** The test servers' limit on subscriptions per connection. */
export const MAX_SUBSCRIPTIONS = 16;

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** A database of its own (dropped by `dropDatabase`). */
export async function createDatabase(): Promise<string> {
  const name = `feedgate_test_ts_${randomBytes(6).toString("hex")}`;
  await admin(`CREATE DATABASE "${name}"`);
  return adminUrl.replace(/\/[^/]*$/, `/${name}`);
}

export async function dropDatabase(url: string): Promise<void> {
  const name = url.slice(url.lastIndexOf("/") + 1);
  await admin(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
}

/** $FEEDGATE_BIN, else the binary `cargo build` makes in this repository. */
export function feedgateBin(): string {
  return process.env.FEEDGATE_BIN ?? join(repo, "target", "debug", "feedgate");
}

export interface ServerOptions {
  /** Let clients in without a token (default true). */
  anonymous?: boolean;
  /** More command-line arguments. */
  extra?: string[];
  /** The address to listen on (default 127.0.0.1:0, a free port); a restarted server takes its
   * predecessor's `addr`. */
  listen?: string;
  /** Resolve once the changefeed reader is connected (default true); false: once listening. */
  waitForDatabase?: boolean;
}

/** Starts `feedgate serve` (the shipped `startServer` of `@feedgate/client/testing`) on
 * `databaseUrl`, on a free port, with this suite's subscription limit; resolves once its
 * changefeed reader is connected. */
export async function startServer(databaseUrl: string | undefined, options: ServerOptions = {}): Promise<Server> {
  return testing.startServer({
    binary: feedgateBin(),
    databaseUrl,
    anonymous: options.anonymous,
    listen: options.listen,
    waitForDatabase: options.waitForDatabase,
    args: ["--max-subscriptions", String(MAX_SUBSCRIPTIONS), ...(options.extra ?? [])],
  });
}

/** What the server's `/v1/stats` says of its database: "connected", "unavailable", ... */
export async function databaseStatus(server: Server): Promise<string | undefined> {
  const stats = (await (await fetch(`http://${server.addr}/v1/stats`)).json()) as { database?: string };
  return stats.database;
}

/** Resolves once the server's changefeed reader is connected. */
export async function waitForDatabase(server: Server, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await databaseStatus(server)) === "connected") return;
    if (Date.now() > deadline) {
      throw new Error(`the changefeed reader never connected:\n${server.log.join("\n")}`);
    }
    await sleep(20);
  }
}

/** Kills the server with SIGKILL (no shutdown: connections just drop) and waits for its end. */
export async function killServer(server: Server): Promise<void> {
  await server.kill();
}

/** A TOML configuration file for `--config` (in the system's temporary directory). */
export function configFile(toml: string): string {
  const path = join(tmpdir(), `feedgate-test-${randomBytes(6).toString("hex")}.toml`);
  writeFileSync(path, toml);
  return path;
}

export async function stopServer(server: Server): Promise<void> {
  await server.stop();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The subscription's next event, rejecting after `timeoutMs`. */
export async function nextEvent(subscription: Subscription, timeoutMs = 10_000): Promise<Event> {
  let iterator = iterators.get(subscription);
  if (iterator === undefined) {
    iterator = subscription[Symbol.asyncIterator]();
    iterators.set(subscription, iterator);
  }
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no event within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const next = await Promise.race([iterator.next(), timeout]);
    if (next.done) throw new Error("the subscription ended");
    return next.value;
  } finally {
    clearTimeout(timer);
  }
}

const iterators = new WeakMap<Subscription, AsyncIterator<Event>>();

/** `promise`'s outcome, or a rejection naming `what` after `timeoutMs`. */
export async function within<T>(promise: Promise<T>, what: string, timeoutMs = 20_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A per-test bound for tests that wait on reconnects, so that a hang fails the test. */
export const TEST_TIMEOUT = { timeout: 120_000 };

/** Polls `predicate` until it holds, failing after `timeoutMs`. */
export async function waitUntil(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await sleep(10);
  }
}

let tables = 0;

/** A fresh watched table `public.items_<n>` (id bigint primary key, name, price, added, tags). */
export async function createTable(db: pg.Client): Promise<string> {
  const name = `items_${process.pid}_${++tables}`;
  await db.query(
    `CREATE TABLE ${name} (id bigint PRIMARY KEY, name text NOT NULL, price numeric,
       added timestamptz, tags jsonb)`,
  );
  await db.query("SELECT feedgate.watch($1)", [`public.${name}`]);
  return `public.${name}`;
}

/** A server with a database of its own, for one test file; `close()` stops and drops both. */
export async function environment(
  options: ServerOptions = {},
): Promise<{ server: Server; db: pg.Client; close: () => Promise<void> }> {
  const databaseUrl = await createDatabase();
  const server = await startServer(databaseUrl, options);
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  return {
    server,
    db,
    close: async () => {
      await db.end();
      await stopServer(server);
      await dropDatabase(databaseUrl);
    },
  };
}

export type Environment = Awaited<ReturnType<typeof environment>>;

/**
 * Registers a test file's hooks: before its tests, a server with a database of its own and a
 * connected client; after them, all of it closed. The returned object is filled in by `before`.
 */
export function suite(): { env: Environment; client: Client } {
  const state = {} as { env: Environment; client: Client };
  before(async () => {
    state.env = await environment();
    state.client = await Client.connect(state.env.server.url, { clientName: "node-test" });
  });
  after(async () => {
    await state.client?.close();
    await state.env?.close();
  });
  return state;
}
