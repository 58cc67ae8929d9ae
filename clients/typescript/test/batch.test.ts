// The batches of a squashing subscription (Event.more), without a server: a subscription holds a
// batch until its last event and delivers it whole, moves its resume position only at a batch's
// end, drops a batch cut by a dropped connection, and refuses a batch longer than the limit.
import assert from "node:assert/strict";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";
import { Batch } from "../src/batch.js";
import type { Client } from "../src/client.js";
import { ErrorCode, FeedgateError } from "../src/errors.js";
import { type Event, EventSchema } from "../src/gen/feedgate/v1/feedgate_pb.js";
import { Subscription } from "../src/subscription.js";

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (data: Uint8Array) => new TextDecoder().decode(data);

function message(payload: string, cursor: string, more = false): Event {
  return create(EventSchema, {
    subscriptionId: 1n,
    cursor: bytes(cursor),
    body: { case: "message", value: { topic: "t", payload: bytes(payload) } },
    more,
  });
}

function payloads(events: Event[]): string[] {
  return events.map((event) => (event.body.case === "message" ? text(event.body.value.payload) : "?"));
}

/** What a subscription asks of its client: only failures, recorded. */
class FakeClient {
  failures: [ErrorCode, string][] = [];
  fail(_: Subscription, error: FeedgateError): void {
    this.failures.push([error.code, error.message]);
  }
  overflow(): void {
    this.failures.push([ErrorCode.SLOW_CONSUMER, "overflow"]);
  }
}

function subscription(client: FakeClient, onEvent: ((event: Event) => void) | undefined, queueSize = 10) {
  const source = { case: "topic" as const, value: { topic: "t", minIntervalMs: 100 } };
  return new Subscription(client as unknown as Client, 1n, source, undefined, onEvent, queueSize);
}

test("a batch is held until its last event, and dropped on request", () => {
  const batch = new Batch();
  assert.deepEqual(payloads(batch.add(message("1", "c1"))), ["1"]);
  assert.deepEqual(batch.add(message("2", "c2", true)), []);
  assert.deepEqual(batch.add(message("3", "c3", true)), []);
  assert.equal(batch.size, 2);
  assert.deepEqual(payloads(batch.add(message("4", "c4"))), ["2", "3", "4"]);
  assert.equal(batch.size, 0);
  batch.add(message("5", "c5", true));
  assert.equal(batch.drop(), 1);
  assert.deepEqual(payloads(batch.add(message("6", "c6"))), ["6"]);
});

test("a batch longer than the limit is refused", () => {
  const batch = new Batch(3);
  batch.add(message("1", "", true));
  batch.add(message("2", "", true));
  assert.deepEqual(payloads(batch.add(message("3", ""))), ["1", "2", "3"]); // at the limit
  batch.add(message("1", "", true));
  batch.add(message("2", "", true));
  assert.throws(
    () => batch.add(message("3", "", true)),
    (error: unknown) => error instanceof FeedgateError && error.code === ErrorCode.LIMIT_EXCEEDED,
  );
  assert.equal(batch.size, 0);
});

test("a subscription delivers whole batches and resumes from a batch's end", () => {
  const client = new FakeClient();
  const received: [string, string][] = [];
  const sub = subscription(client, (event) => received.push([payloads([event])[0]!, text(sub.lastCursor)]));
  sub.deliver(message("1", "c1"));
  sub.deliver(message("2", "c2", true));
  sub.deliver(message("3", "c3", true));
  assert.deepEqual(received, [["1", "c1"]], "a batch's events are held");
  assert.equal(text(sub.lastCursor), "c1", "the position moves only at a batch's end");
  sub.deliver(message("4", "c4"));
  // Released together: while they are delivered, the position is already the batch's end.
  assert.deepEqual(received.slice(1), [["2", "c4"], ["3", "c4"], ["4", "c4"]]);
  // The connection drops in the middle of the next batch: its part is dropped, and the resume
  // starts after the last whole batch.
  sub.deliver(message("5", "c5", true));
  const resume = sub.resumeCommand();
  assert.ok(resume?.case === "subscribe");
  assert.equal(text(resume.value.resumeFrom ?? new Uint8Array()), "c4");
  // The resume sends those changes again (a catch-up is unsquashed: lone events).
  sub.deliver(message("5", "c5"));
  sub.deliver(message("6", "c6", true));
  sub.deliver(message("7", "c7"));
  assert.deepEqual(received.map(([payload]) => payload), ["1", "2", "3", "4", "5", "6", "7"]);
  assert.equal(text(sub.lastCursor), "c7");
  assert.deepEqual(client.failures, []);
});

test("an iterated subscription queues a batch whole or not at all", async () => {
  const client = new FakeClient();
  const sub = subscription(client, undefined, 3);
  sub.deliver(message("1", "c1", true));
  sub.deliver(message("2", "c2"));
  sub.deliver(message("3", "c3", true));
  sub.deliver(message("4", "c4")); // 2 queued + 2 > 3: the queue cannot take the batch
  assert.deepEqual(client.failures, [[ErrorCode.SLOW_CONSUMER, "overflow"]]);
  sub.finish(undefined);
  const events: Event[] = [];
  for await (const event of sub) events.push(event);
  assert.deepEqual(payloads(events), ["1", "2"]);
});

test("a subscription whose batch outgrows the limit is failed, not flooded", () => {
  const client = new FakeClient();
  const sub = subscription(client, () => undefined);
  for (let n = 0; n < 10_000; n++) sub.deliver(message(String(n), "", true));
  assert.equal(client.failures.length, 1);
  assert.equal(client.failures[0]![0], ErrorCode.LIMIT_EXCEEDED);
});
