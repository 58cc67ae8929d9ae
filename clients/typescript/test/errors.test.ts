// Errors arrive as FeedgateError with the protocol's code, and the connection keeps working.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";

import { Client, ConnectionClosedError, ErrorCode, type Event, FeedgateError } from "../src/index.js";
import { MAX_SUBSCRIPTIONS, nextEvent, startServer, stopServer, suite } from "./support.js";

const t = suite();

async function expectError(code: ErrorCode, promise: Promise<unknown>): Promise<FeedgateError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof FeedgateError, `expected a FeedgateError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  return caught;
}

test("error codes, and the connection survives them", async () => {
  const notFound = await expectError(ErrorCode.NOT_FOUND, t.client.subscribeTable("public.missing"));
  assert.equal(notFound.codeName, "NOT_FOUND");
  assert.match(notFound.message, /missing/);
  await expectError(ErrorCode.VALIDATION, t.client.subscribeTopic("bad topic"));
  await expectError(
    ErrorCode.RESUME_UNAVAILABLE,
    t.client.subscribeTopic("t", { resumeFrom: new Uint8Array([1, 2]) }),
  );
  // An in-process topic's cursor from another run of the server (another epoch).
  const otherRun = new Uint8Array(18);
  otherRun.set([1, "m".charCodeAt(0)]);
  otherRun[17] = 1;
  const stale = await expectError(
    ErrorCode.RESUME_UNAVAILABLE,
    t.client.subscribeTopic("t", { resumeFrom: otherRun }),
  );
  assert.match(stale.message, /another run/);
  await expectError(ErrorCode.VALIDATION, t.client.publish("", "x"));
  await expectError(
    ErrorCode.SUBSCRIPTION_NOT_FOUND,
    t.client.request({ case: "unsubscribe", value: { subscriptionId: 12345n } }),
  );
  assert.ok((await t.client.ping()) > 0n);
});

test("an oversized request is refused and the connection lives", async () => {
  const limit = t.client.welcome!.limits!.maxMessageSize;
  const error = await expectError(
    ErrorCode.LIMIT_EXCEEDED,
    t.client.publish("big", new Uint8Array(limit + 1)),
  );
  assert.equal(error.retryable, false);
  const published = await t.client.publish("big", new Uint8Array(1000));
  assert.ok(published.offset > 0n);
});

test("the subscription limit", async () => {
  const other = await Client.connect(t.env.server.url);
  assert.equal(other.welcome!.limits!.maxSubscriptions, MAX_SUBSCRIPTIONS);
  const subscriptions = [];
  for (let n = 0; n < MAX_SUBSCRIPTIONS; n++) {
    subscriptions.push(await other.subscribeTopic(`limit.${n}`));
  }
  const error = await expectError(ErrorCode.LIMIT_EXCEEDED, other.subscribeTopic("limit.over"));
  assert.equal(error.details.limit, String(MAX_SUBSCRIPTIONS));
  await subscriptions[0]!.unsubscribe();
  await other.subscribeTopic("limit.over");
  await other.close();
});

test("a slow iterator is ended, not silently skipped", async () => {
  const slowClient = await Client.connect(t.env.server.url, { queueSize: 5 });
  const slow = await slowClient.subscribeTopic("slow");
  const other = await slowClient.subscribeTopic("slow.other");
  for (let n = 0; n < 20; n++) await slowClient.publish("slow", `${n}`);
  await slowClient.publish("slow.other", "fine");
  const received: Event[] = [];
  const error = await expectError(
    ErrorCode.SLOW_CONSUMER,
    (async () => {
      for await (const event of slow) received.push(event);
    })(),
  );
  assert.equal(error.retryable, true);
  // The queued prefix is delivered in order, then the error: nothing in between is lost.
  assert.deepEqual(received.map((e) => e.body.case), ["ready", "message", "message", "message", "message"]);
  assert.deepEqual(
    received.slice(1).map((e) => (e.body.case === "message" ? new TextDecoder().decode(e.body.value.payload) : "")),
    ["0", "1", "2", "3"],
  );
  assert.equal((await nextEvent(other)).body.case, "ready");
  const fine = await nextEvent(other);
  assert.equal(fine.body.case === "message" && new TextDecoder().decode(fine.body.value.payload), "fine");
  await slowClient.close();
});

test("server shutdown fails subscriptions with a retryable code", async () => {
  const server = await startServer(t.env.server.databaseUrl);
  // Without reconnecting, the close itself reaches the application.
  const doomed = await Client.connect(server.url, { reconnect: false });
  const subscription = await doomed.subscribeTopic("going.away");
  await nextEvent(subscription);
  await stopServer(server);
  let caught: unknown;
  try {
    await nextEvent(subscription);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConnectionClosedError, String(caught));
  assert.equal(caught.closeCode, 1001);
  assert.equal(caught.code, ErrorCode.SHUTTING_DOWN);
  assert.equal(caught.retryable, true);
  await assert.rejects(doomed.ping(), ConnectionClosedError);
  await doomed.close();
});

test("a throwing callback ends only its subscription", async () => {
  const failing = await t.client.subscribeTopic("callbacks", {
    onEvent: (event) => {
      if (event.body.case === "message") throw new Error("boom");
    },
  });
  const healthy = await t.client.subscribeTopic("callbacks");
  await t.client.publish("callbacks", "one");
  const error = await failing.closed;
  assert.equal(error?.code, ErrorCode.INTERNAL);
  assert.match(error!.message, /boom/);
  assert.equal((await nextEvent(healthy)).body.case, "ready");
  const one = await nextEvent(healthy);
  assert.equal(one.body.case === "message" && new TextDecoder().decode(one.body.value.payload), "one");
});

test("token and welcome", async () => {
  const other = await Client.connect(t.env.server.url, { clientName: "t" });
  assert.equal(other.welcome!.protocolVersion, 1);
  assert.ok(other.welcome!.sessionId.length > 0);
  assert.ok(other.welcome!.limits!.outboundQueue > 0);
  assert.deepEqual(other.welcome!.authenticated!.roles, ["anonymous"]);
  await other.close();
  // A token is checked whenever one is sent; this server has no keys to check it with.
  await expectError(
    ErrorCode.UNAUTHENTICATED,
    Client.connect(t.env.server.url, { token: "not-a-jwt", clientName: "t" }),
  );
});

test("a signed token lets the client in and can be refreshed", async () => {
  const secret = "typescript-client-test-secret-32-bytes";
  const token = (sub: string, expiresIn: number, key = secret): string => {
    const b64 = (data: string | Buffer) => Buffer.from(data).toString("base64url");
    const header = b64(JSON.stringify({ alg: "HS256", typ: "JWT" }));
    const exp = Math.floor(Date.now() / 1000) + expiresIn;
    const payload = b64(JSON.stringify({ sub, exp, roles: ["user"] }));
    const signature = createHmac("sha256", key).update(`${header}.${payload}`).digest();
    return `${header}.${payload}.${b64(signature)}`;
  };
  const keyed = await startServer(t.env.server.databaseUrl, {
    anonymous: false,
    extra: ["--hs256-secret", secret],
  });
  try {
    const client = await Client.connect(keyed.url, { token: token("ada", 600) });
    assert.equal(client.welcome!.authenticated!.user, "ada");
    const refreshed = await client.authenticate(token("ada", 1200));
    assert.ok(refreshed.expiresAtMicros > client.welcome!.authenticated!.expiresAtMicros);
    await expectError(ErrorCode.UNAUTHENTICATED, client.authenticate(token("eve", 600)));
    assert.ok((await client.ping()) > 0n);
    await client.close();
    for (const bad of [token("ada", -60), token("ada", 600, "another-secret-of-thirty-two-bytes!!")]) {
      await expectError(ErrorCode.UNAUTHENTICATED, Client.connect(keyed.url, { token: bad }));
    }
  } finally {
    await stopServer(keyed);
  }
});

test("a refused connection rejects with ConnectionClosedError", async () => {
  await assert.rejects(Client.connect("ws://127.0.0.1:1/v1/ws"), ConnectionClosedError);
});
