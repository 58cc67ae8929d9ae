/**
 * When and how the client reconnects: the backoff schedule, which ends of a connection are
 * final, the connection states, and where a token comes from.
 *
 * Pure decisions, no sockets and no timers: `client.ts` drives the connections and asks this
 * module how long to wait and whether to try again. The design is shared with the Python client
 * (same options, same states, same rules); the README's "Reconnecting" section describes it.
 */

import { ConnectionClosedError, ErrorCode, FeedgateError } from "./errors.js";

/**
 * The client's connection state: `connecting` (the first connection, until its `Welcome`),
 * `open`, `reconnecting` (the connection dropped; subscriptions wait, new requests queue) and
 * `closed` (for good: `close()` was called, the server refused the client, or reconnecting gave
 * up).
 */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/**
 * Called on every state change with the new state and, for `reconnecting` and for a `closed`
 * that the application did not ask for, the error that caused it (undefined otherwise). For
 * `reconnecting` it is always a `ConnectionClosedError`.
 */
export type StateChangeCallback = (state: ConnectionState, error: FeedgateError | undefined) => void;

/** A token, or a function returning one (or a Promise of one), called before every
 * connection's `Hello` so that a reconnect can carry a fresh token. */
export type TokenSource = string | (() => string | Promise<string>);

/**
 * How the client retries a dropped connection: before attempt n (0, 1, ...) it waits a
 * uniformly random time in [d/2, d] with d = min(maxDelayMs, initialDelayMs × multiplier^n)
 * ("equal jitter": never all clients of a restarted server at once, never much sooner than
 * planned). n starts again at 0 once a connection is open.
 */
export interface ReconnectOptions {
  /** The ceiling of the first wait (default 100 ms). */
  initialDelayMs?: number;
  /** The ceiling of every wait (default 10,000 ms). */
  maxDelayMs?: number;
  /** How much the ceiling grows per failed attempt (default 2). */
  multiplier?: number;
  /** Failed attempts in a row after which the client closes; undefined (default): never gives
   * up. */
  maxAttempts?: number;
}

/** `ReconnectOptions` with every default filled in. */
export type ReconnectPolicy = Required<Omit<ReconnectOptions, "maxAttempts">> &
  Pick<ReconnectOptions, "maxAttempts">;

export const DEFAULT_RECONNECT: ReconnectPolicy = {
  initialDelayMs: 100,
  maxDelayMs: 10_000,
  multiplier: 2,
  maxAttempts: undefined,
};

/**
 * WebSocket close codes after which reconnecting cannot help, so the client closes for good:
 * 4001 (the token was refused or expired: the application must act), 1002 (a protocol error, a
 * bug on one side) and 1009 (a frame too big for the server: resending it would fail again).
 */
export const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set([1002, 1009, 4001]);

/**
 * Errors other than a close after which another attempt cannot help: the server refused the
 * `Hello`'s token (like close code 4001) or does not speak this protocol version, or this client
 * could not decode a frame (the stream can no longer be trusted; it closed the connection).
 */
const FINAL_ERROR_CODES: ReadonlySet<ErrorCode> = new Set([
  ErrorCode.UNAUTHENTICATED,
  ErrorCode.UNSUPPORTED_PROTOCOL_VERSION,
  ErrorCode.INVALID_MESSAGE,
]);

/** `connect({ reconnect })`'s value as a policy; undefined when reconnecting is off. */
export function reconnectPolicy(value: boolean | ReconnectOptions | undefined): ReconnectPolicy | undefined {
  if (value === false) return undefined;
  if (value === undefined || value === true) return DEFAULT_RECONNECT;
  const policy: ReconnectPolicy = {
    initialDelayMs: value.initialDelayMs ?? DEFAULT_RECONNECT.initialDelayMs,
    maxDelayMs: value.maxDelayMs ?? DEFAULT_RECONNECT.maxDelayMs,
    multiplier: value.multiplier ?? DEFAULT_RECONNECT.multiplier,
    maxAttempts: value.maxAttempts,
  };
  if (!(policy.initialDelayMs >= 0 && policy.maxDelayMs >= policy.initialDelayMs)) {
    throw new RangeError("reconnect: need 0 <= initialDelayMs <= maxDelayMs");
  }
  if (!(policy.multiplier >= 1)) throw new RangeError("reconnect: multiplier must be at least 1");
  if (policy.maxAttempts !== undefined && !(Number.isInteger(policy.maxAttempts) && policy.maxAttempts >= 1)) {
    throw new RangeError("reconnect: maxAttempts must be an integer of at least 1 (or undefined: unlimited)");
  }
  return policy;
}

/** Milliseconds to wait before attempt `attempt` (0-based); `random` returns [0, 1). */
export function backoffDelay(policy: ReconnectPolicy, attempt: number, random: () => number = Math.random): number {
  // Past the cap the power may overflow to Infinity; min() keeps the cap.
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.multiplier ** attempt);
  return ceiling / 2 + (random() * ceiling) / 2;
}

/**
 * Whether a connection, or an attempt at one, that ended with `error` is worth dialling again:
 * a close by the server or the network except the final close codes, a `Hello` answered with an
 * error that is not final (a connection limit, say), a token function that failed. False for the
 * final close codes and errors above.
 */
export function reconnectsAfter(error: unknown): boolean {
  if (error instanceof ConnectionClosedError) return !FINAL_CLOSE_CODES.has(error.closeCode);
  if (error instanceof FeedgateError) return !FINAL_ERROR_CODES.has(error.code);
  return true;
}

/** The token to send now. */
export async function resolveToken(source: TokenSource | undefined): Promise<string> {
  if (source === undefined || typeof source === "string") return source ?? "";
  const token = await source();
  if (typeof token !== "string") {
    throw new TypeError(`the token function returned ${typeof token}, not a string`);
  }
  return token;
}
