// The reconnect schedule and rules on their own (pure functions: no server).
import assert from "node:assert/strict";
import { test } from "node:test";

import { ConnectionClosedError, ErrorCode, FeedgateError } from "../src/index.js";
import { backoffDelay, DEFAULT_RECONNECT, reconnectPolicy, reconnectsAfter, resolveToken } from "../src/reconnect.js";

test("equal jitter: attempt n waits in [d/2, d], d = min(max, initial × multiplier^n)", () => {
  const policy = reconnectPolicy({ initialDelayMs: 100, maxDelayMs: 1000, multiplier: 2 })!;
  const ceilings = [100, 200, 400, 800, 1000, 1000];
  for (const [attempt, ceiling] of ceilings.entries()) {
    assert.equal(backoffDelay(policy, attempt, () => 0), ceiling / 2);
    assert.equal(backoffDelay(policy, attempt, () => 0.5), (ceiling * 3) / 4);
    assert.ok(backoffDelay(policy, attempt, () => 0.999999) <= ceiling);
  }
  // Far past the cap the power overflows to Infinity; the cap still holds.
  assert.equal(backoffDelay(policy, 5000, () => 0), 500);
  // Math.random by default: always within the bounds.
  for (let n = 0; n < 1000; n++) {
    const delay = backoffDelay(policy, 2);
    assert.ok(delay >= 200 && delay <= 400, String(delay));
  }
});

test("the reconnect option: on by default, off, or options with defaults filled in", () => {
  assert.deepEqual(reconnectPolicy(undefined), DEFAULT_RECONNECT);
  assert.deepEqual(reconnectPolicy(true), {
    initialDelayMs: 100,
    maxDelayMs: 10_000,
    multiplier: 2,
    maxAttempts: undefined,
  });
  assert.equal(reconnectPolicy(false), undefined);
  assert.deepEqual(reconnectPolicy({ maxAttempts: 3 }), { ...DEFAULT_RECONNECT, maxAttempts: 3 });
  assert.throws(() => reconnectPolicy({ maxAttempts: 0 }), RangeError);
  assert.throws(() => reconnectPolicy({ multiplier: 0.5 }), RangeError);
  assert.throws(() => reconnectPolicy({ initialDelayMs: 500, maxDelayMs: 100 }), RangeError);
});

test("which ends are final", () => {
  for (const code of [1001, 1006, 4000, 4008, 4029, 1000]) {
    assert.equal(reconnectsAfter(new ConnectionClosedError(code, "")), true, String(code));
  }
  for (const code of [4001, 1002, 1009]) {
    assert.equal(reconnectsAfter(new ConnectionClosedError(code, "")), false, String(code));
  }
  assert.equal(reconnectsAfter(new FeedgateError(ErrorCode.UNAUTHENTICATED, "expired")), false);
  assert.equal(reconnectsAfter(new FeedgateError(ErrorCode.INVALID_MESSAGE, "undecodable")), false);
  assert.equal(reconnectsAfter(new FeedgateError(ErrorCode.LIMIT_EXCEEDED, "connections")), true);
  assert.equal(reconnectsAfter(new TypeError("the token service is down")), true);
});

test("a token may be a string or a function, sync or async", async () => {
  assert.equal(await resolveToken(undefined), "");
  assert.equal(await resolveToken("plain"), "plain");
  assert.equal(await resolveToken(() => "sync"), "sync");
  assert.equal(await resolveToken(async () => "async"), "async");
  await assert.rejects(resolveToken((() => 42) as unknown as () => string), TypeError);
});
