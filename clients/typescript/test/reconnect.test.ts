// Reconnecting by itself: a test-side TCP proxy between client and server cuts and pauses the
// connections; the client must carry its subscriptions across, each event once and in order.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import pg from "pg";

import {
  Client,
  type ConnectionState,
  ConnectionClosedError,
  type ConnectOptions,
  ErrorCode,
  type Event,
  FeedgateError,
  keyOf,
  rowToObject,
} from "../src/index.js";
import { Proxy } from "./proxy.js";
import {
  configFile,
  createTable,
  environment,
  type Environment,
  nextEvent,
  startServer,
  stopServer,
  TEST_TIMEOUT,
  waitUntil,
  within,
} from "./support.js";

/** Reconnect quickly: these tests wait for it. */
const FAST = { initialDelayMs: 20, maxDelayMs: 200 };

let env: Environment;
let config: string | undefined;
const proxies: Proxy[] = [];
const clients: Client[] = [];

before(async () => {
  // Room for every message a publisher sends while a subscriber is cut off: a resume must not
  // fail because the history moved on (that answer has tests of its own on the server's side).
  config = configFile("[memory]\nhistory_size = 1000000\nhistory_bytes = 268435456\n");
  env = await environment({ extra: ["--config", config] });
});

after(async () => {
  for (const client of clients) await client.close();
  for (const proxy of proxies) await proxy.close();
  await env?.close();
  if (config !== undefined) rmSync(config, { force: true });
});

async function proxy(target = env.server.addr): Promise<Proxy> {
  const started = await Proxy.start(target);
  proxies.push(started);
  return started;
}

async function connect(url: string, options: ConnectOptions = {}): Promise<Client> {
  const client = await Client.connect(url, { clientName: "node-reconnect-test", reconnect: FAST, ...options });
  clients.push(client);
  return client;
}

/** Records the client's state changes. */
function recorder(): { states: [ConnectionState, FeedgateError | undefined][]; names: () => ConnectionState[] } {
  const states: [ConnectionState, FeedgateError | undefined][] = [];
  return { states, names: () => states.map(([state]) => state) };
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected a rejection");
}

test("state: connecting, open, reconnecting after a cut, open again, closed after close()", TEST_TIMEOUT, async () => {
  const through = await proxy();
  const { states, names } = recorder();
  const client = await connect(through.url, { onStateChange: (state, error) => states.push([state, error]) });
  assert.equal(client.state, "open");
  assert.deepEqual(names(), ["connecting", "open"]);
  const firstSession = client.welcome!.sessionId;

  through.cut();
  await waitUntil(() => states.length === 4);
  assert.deepEqual(names(), ["connecting", "open", "reconnecting", "open"]);
  const cause = states[2]![1];
  assert.ok(cause instanceof ConnectionClosedError, String(cause));
  assert.equal(cause.closeCode, 1006);
  assert.equal(cause.retryable, true);
  assert.equal(states[3]![1], undefined);
  assert.equal(through.accepted, 2);
  assert.notEqual(client.welcome!.sessionId, firstSession, "a new session says Hello again");
  assert.ok((await client.ping()) > 0n);

  const later: ConnectionState[] = [];
  const stop = client.onStateChange((state) => later.push(state));
  await client.close();
  stop();
  assert.equal(client.state, "closed");
  assert.deepEqual(names(), ["connecting", "open", "reconnecting", "open", "closed"]);
  assert.equal(states[4]![1], undefined, "the application's close carries no error");
  assert.deepEqual(later, ["closed"]);
  await assert.rejects(client.ping(), ConnectionClosedError);
  assert.equal(through.accepted, 2, "no reconnect after close()");
});

test("reconnect: false keeps the old behaviour: a cut ends subscriptions with ConnectionClosedError", TEST_TIMEOUT, async () => {
  const through = await proxy();
  const { states, names } = recorder();
  const client = await connect(through.url, {
    reconnect: false,
    onStateChange: (state, error) => states.push([state, error]),
  });
  const subscription = await client.subscribeTopic("no-reconnect");
  assert.equal((await nextEvent(subscription)).body.case, "ready");
  through.cut();
  const error = await within(subscription.closed, "the subscription's end");
  assert.ok(error instanceof ConnectionClosedError, String(error));
  assert.equal(error.closeCode, 1006);
  assert.equal(error.retryable, true);
  assert.deepEqual(names(), ["connecting", "open", "closed"]);
  assert.equal(states[2]![1], error);
  await assert.rejects(client.ping(), ConnectionClosedError);
  assert.equal(through.accepted, 1, "never dialled again");
});

test("a table and a topic continue across cuts: every change and message once, in order, one Ready", TEST_TIMEOUT, async () => {
  await env.db.query(`CREATE TABLE versioned (id bigint PRIMARY KEY, version int NOT NULL)`);
  await env.db.query("SELECT feedgate.watch('public.versioned')");
  await env.db.query("INSERT INTO versioned SELECT g, 1 FROM generate_series(1, 20) g");
  const through = await proxy();
  const seen: ConnectionState[] = [];
  const client = await connect(through.url, { onStateChange: (state) => seen.push(state) });

  const tableEvents: Event[] = [];
  const rows = await client.subscribeTable("public.versioned", {
    includeInitial: true,
    onEvent: (event) => tableEvents.push(event),
  });
  const topic = await client.subscribeTopic("cuts.sequence");
  const topicEvents: Event[] = [];
  const reading = (async () => {
    for await (const event of topic) topicEvents.push(event);
  })();
  const view = await client.materializedView("public.versioned");
  await within(Promise.all([rows.ready, topic.ready, view.waitReady()]), "Ready");

  // A writer and a publisher that keep going, cuts or not (neither goes through the proxy).
  const writer = new pg.Client({ connectionString: env.server.databaseUrl });
  await writer.connect();
  const publisher = await connect(env.server.url, { clientName: "publisher" });
  let running = true;
  let commits = 0;
  let published = 0;
  const writing = (async () => {
    while (running) {
      if (commits % 5 === 4) {
        await writer.query("INSERT INTO versioned VALUES ($1, 1)", [1000 + commits]);
      } else {
        await writer.query("UPDATE versioned SET version = version + 1 WHERE id = $1", [1 + (commits % 20)]);
      }
      commits += 1;
    }
  })();
  const publishing = (async () => {
    while (running) {
      await publisher.publish("cuts.sequence", String(published));
      published += 1;
    }
  })();

  // Each step: the connection is open again and both streams moved on.
  const progress = async () => {
    const [changes, messages] = [tableEvents.length, topicEvents.length];
    await waitUntil(
      () => client.state === "open" && tableEvents.length > changes + 10 && topicEvents.length > messages + 10,
      30_000,
    );
  };
  await progress();
  through.cut();
  await progress();
  await through.cutMidFrame();
  await progress();
  through.pause();
  const [pausedCommits, pausedPublished] = [commits, published];
  await waitUntil(() => commits > pausedCommits + 20 && published > pausedPublished + 20);
  through.cut();
  through.resume();
  await progress();
  running = false;
  await within(Promise.all([writing, publishing]), "the writer's and publisher's end");
  await writer.end();

  // Everything arrives: the last message, and every row's last version.
  const last = String(published - 1);
  await waitUntil(() => {
    const event = topicEvents.at(-1);
    return event?.body.case === "message" && text(event.body.value.payload) === last;
  }, 30_000);
  const table = new Map<number, number>(
    (await env.db.query("SELECT id, version FROM versioned")).rows.map((r) => [Number(r.id), r.version]),
  );
  const latest = new Map<number, number>();
  const versions = new Map<number, number[]>();
  const kinds: string[] = [];
  await waitUntil(() => {
    latest.clear();
    versions.clear();
    kinds.length = 0;
    for (const event of tableEvents) {
      kinds.push(event.body.case ?? "none");
      if (event.body.case !== "change") continue;
      const row = rowToObject(event.body.value.newRow);
      const id = keyOf(event.body.value.key) as number;
      versions.set(id, [...(versions.get(id) ?? []), row.version as number]);
      latest.set(id, row.version as number);
    }
    return latest.size === table.size && [...table].every(([id, version]) => latest.get(id) === version);
  }, 30_000);

  assert.deepEqual(seen, ["connecting", "open", "reconnecting", "open", "reconnecting", "open", "reconnecting", "open"]);
  assert.equal(through.accepted, 4);
  // The table: 20 initial rows, then Ready once, then each row's versions one by one.
  assert.equal(kinds.filter((kind) => kind === "ready").length, 1, "one Ready");
  assert.equal(kinds.indexOf("ready"), 20);
  for (const [id, list] of versions) {
    const expected = Array.from({ length: list.length }, (_, n) => n + 1);
    assert.deepEqual(list, expected, `row ${id}: every version once, in order`);
  }
  // The topic: Ready once, then 0, 1, 2, ... with none missing or doubled.
  assert.equal(topicEvents[0]!.body.case, "ready");
  const payloads = topicEvents.slice(1).map((event) => {
    assert.equal(event.body.case, "message");
    return event.body.case === "message" ? text(event.body.value.payload) : "";
  });
  assert.deepEqual(payloads, Array.from({ length: published }, (_, n) => String(n)));
  // The view resumed with its subscription: no rebuild, and it equals the table.
  assert.equal(view.resets, 0);
  // The view's subscription is another one: it may arrive a moment later.
  await waitUntil(() => view.size === table.size && [...table].every(([id, version]) => view.get(id)?.version === version));
  assert.ok(commits > 60 && published > 60, `enough traffic: ${commits} commits, ${published} messages`);

  await client.close();
  await within(reading, "the end of the topic's iteration");
});

test("a subscription without a position ends with a client-made RESUME_UNAVAILABLE; the others resume", TEST_TIMEOUT, async () => {
  const table = await createTable(env.db);
  await env.db.query(
    `INSERT INTO ${table} (id, name) SELECT g, repeat('x', 1000) FROM generate_series(1, 5000) g`,
  );
  const through = await proxy();
  const client = await connect(through.url);
  const topic = await client.subscribeTopic("positioned");
  await client.publish("positioned", "before");
  assert.equal((await nextEvent(topic)).body.case, "ready");
  assert.equal((await nextEvent(topic)).body.case, "message");
  // A snapshot cut at its first row: INITIAL rows carry no cursor.
  let initialRows = 0;
  const snapshot = await client.subscribeTable(table, {
    includeInitial: true,
    onEvent: (event) => {
      if (event.body.case === "change" && initialRows++ === 0) through.cut();
    },
  });
  const error = await within(snapshot.closed, "the snapshot subscription's end");
  assert.ok(error instanceof FeedgateError && !(error instanceof ConnectionClosedError), String(error));
  assert.equal(error.code, ErrorCode.RESUME_UNAVAILABLE);
  assert.equal(error.retryable, true);
  assert.match(error.message, /before the subscription had a position to resume from/);
  assert.equal(error.details.subscription_id, String(snapshot.id));
  assert.ok(initialRows >= 1 && initialRows < 5000, `cut inside the snapshot (${initialRows} rows)`);
  await assert.rejects(snapshot.ready);

  // The topic had a position: it carries on.
  await waitUntil(() => client.state === "open");
  await client.publish("positioned", "after");
  const after = await nextEvent(topic);
  assert.equal(after.body.case === "message" && text(after.body.value.payload), "after");
  assert.equal(topic.isClosed, false);
});

test("a topic subscription that has seen only Ready resumes from Ready's cursor", TEST_TIMEOUT, async () => {
  // Needs a server whose topic Ready carries a cursor (the position at subscribe time).
  const through = await proxy();
  const client = await connect(through.url);
  const publisher = await connect(env.server.url, { clientName: "publisher" });
  const topic = await client.subscribeTopic("ready-only");
  assert.equal((await nextEvent(topic)).body.case, "ready");
  assert.ok(topic.lastCursor.length > 0, "Ready carried a cursor");
  through.refuse(true);
  through.cut();
  await waitUntil(() => client.state === "reconnecting");
  await publisher.publish("ready-only", "while cut off");
  through.refuse(false);
  const missed = await nextEvent(topic);
  assert.equal(missed.body.case === "message" && text(missed.body.value.payload), "while cut off");
  await publisher.publish("ready-only", "live");
  const live = await nextEvent(topic);
  assert.equal(live.body.case === "message" && text(live.body.value.payload), "live");
  assert.equal(topic.isClosed, false);
});

test("in flight at a cut: rejects, retryable; made while reconnecting: sent once back", TEST_TIMEOUT, async () => {
  const through = await proxy();
  const client = await connect(through.url);
  const observer = await connect(env.server.url, { clientName: "observer" });
  const watched = await observer.subscribeTopic("inflight");
  assert.equal((await nextEvent(watched)).body.case, "ready");
  const kept = await client.subscribeTopic("inflight.kept");
  await client.publish("inflight.kept", "a position to resume from");
  assert.equal((await nextEvent(kept)).body.case, "ready");
  assert.equal((await nextEvent(kept)).body.case, "message");
  const dropped = await client.subscribeTopic("inflight.dropped");
  await dropped.ready;
  assert.ok((await client.ping()) > 0n);

  // Sent, never answered: the proxy holds them, then the connection is cut.
  through.pause();
  const ping = client.ping();
  const publish = client.publish("inflight", "held, then cut");
  through.refuse(true);
  through.cut();
  through.resume();
  for (const request of [ping, publish]) {
    const error = await within(rejection(request), "the in-flight request's rejection");
    assert.ok(error instanceof ConnectionClosedError, String(error));
    assert.equal(error.retryable, true);
  }
  assert.equal(client.state, "reconnecting");

  // Made while reconnecting: they wait (attempts keep being refused meanwhile).
  const settled: string[] = [];
  const ping2 = client.ping().then((time) => (settled.push("ping"), time));
  const publish2 = client.publish("inflight", "sent after the reconnect").then((p) => (settled.push("publish"), p));
  const subscribe = client.subscribeTopic("inflight.new").then((s) => (settled.push("subscribe"), s));
  await dropped.unsubscribe(); // nothing to tell a server: ends here at once
  assert.equal(dropped.isClosed, true);
  const refusedBefore = through.refused;
  await waitUntil(() => through.refused >= refusedBefore + 2);
  assert.deepEqual(settled, [], "nothing is answered while reconnecting");
  assert.equal(client.state, "reconnecting");

  through.refuse(false);
  assert.ok((await within(ping2, "the waiting ping")) > 0n);
  const published = await within(publish2, "the waiting publish");
  const fresh = await within(subscribe, "the waiting subscribe");
  assert.equal(client.state, "open");
  assert.deepEqual(settled, ["ping", "publish", "subscribe"], "sent in the order they were made");
  assert.equal((await nextEvent(fresh)).body.case, "ready");

  // The observer saw the second publish once, and never the first (it never left the proxy).
  const event = await nextEvent(watched);
  assert.equal(event.body.case === "message" && text(event.body.value.payload), "sent after the reconnect");
  assert.equal(event.body.case === "message" && event.body.value.offset, published.offset);
  await observer.publish("inflight", "barrier");
  const barrier = await nextEvent(watched);
  assert.equal(barrier.body.case === "message" && text(barrier.body.value.payload), "barrier");
  // The kept subscription was resubscribed, the dropped one was not.
  await client.publish("inflight.kept", "still here");
  const still = await nextEvent(kept);
  assert.equal(still.body.case === "message" && text(still.body.value.payload), "still here");
});

test("gives up after maxAttempts failed attempts in a row: closed, subscriptions end", TEST_TIMEOUT, async () => {
  const through = await proxy();
  const { states, names } = recorder();
  const client = await connect(through.url, {
    reconnect: { initialDelayMs: 5, maxDelayMs: 20, maxAttempts: 3 },
    onStateChange: (state, error) => states.push([state, error]),
  });
  const subscription = await client.subscribeTopic("give-up");
  await subscription.ready;
  through.refuse(true);
  through.cut();
  await waitUntil(() => client.state === "reconnecting");
  const waiting = client.ping();
  const error = await within(subscription.closed, "the subscription's end");
  assert.ok(error instanceof ConnectionClosedError, String(error));
  assert.equal(client.state, "closed");
  assert.deepEqual(names(), ["connecting", "open", "reconnecting", "closed"]);
  assert.equal(error.closeCode, 1006, "the close code of the drop that started it");
  assert.match(error.message, /gave up reconnecting after 3 attempts; the last: /);
  assert.equal(states[3]![1], error);
  assert.equal(through.refused, 3, "exactly maxAttempts attempts");
  assert.equal(await within(rejection(waiting), "the waiting ping"), error, "a request waiting for the connection fails with it");
});

test("a token function is called on every connect; a refused token on reconnect closes the client", TEST_TIMEOUT, async () => {
  const secret = "typescript-client-reconnect-secret-32b";
  const sign = (sub: string): string => {
    const b64 = (data: string | Buffer) => Buffer.from(data).toString("base64url");
    const header = b64(JSON.stringify({ alg: "HS256", typ: "JWT" }));
    const payload = b64(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + 600, roles: ["user"] }));
    return `${header}.${payload}.${b64(createHmac("sha256", secret).update(`${header}.${payload}`).digest())}`;
  };
  const keyed = await startServer(env.server.databaseUrl, { anonymous: false, extra: ["--hs256-secret", secret] });
  try {
    const through = await proxy(keyed.addr);
    let calls = 0;
    let refuse = false;
    const { states, names } = recorder();
    const client = await connect(through.url, {
      token: async () => (refuse ? "not-a-jwt" : sign(`user-${++calls}`)),
      onStateChange: (state, error) => states.push([state, error]),
    });
    assert.equal(client.welcome!.authenticated!.user, "user-1");
    const subscription = await client.subscribeTopic("tokens");
    await client.publish("tokens", "before the cut");
    assert.equal((await nextEvent(subscription)).body.case, "ready");
    assert.equal((await nextEvent(subscription)).body.case, "message");

    through.cut();
    await waitUntil(() => names().length === 4);
    assert.equal(client.state, "open");
    assert.equal(calls, 2);
    assert.equal(client.welcome!.authenticated!.user, "user-2", "the reconnect's Hello carried the fresh token");
    await client.publish("tokens", "after the reconnect");
    const message = await nextEvent(subscription);
    assert.equal(message.body.case === "message" && text(message.body.value.payload), "after the reconnect");

    refuse = true;
    through.cut();
    const error = await within(subscription.closed, "the subscription's end");
    assert.ok(error instanceof FeedgateError, String(error));
    assert.equal(error.code, ErrorCode.UNAUTHENTICATED);
    assert.equal(client.state, "closed");
    assert.deepEqual(names(), ["connecting", "open", "reconnecting", "open", "reconnecting", "closed"]);
    assert.equal(states[5]![1], error);
  } finally {
    await stopServer(keyed);
  }
});
