/**
 * Errors: one class that carries the protocol's error code.
 *
 * Every failure the server reports arrives as an `Error { code, message, retryable,
 * retry_after_ms, details }` (in a `Response`, or in `SubscriptionClosed` when the server ends a
 * subscription); `FeedgateError` carries all of it. A lost connection rejects with
 * `ConnectionClosedError`, whose code is derived from the WebSocket close code.
 */

import { ErrorCode, type Error as ErrorMessage } from "./gen/feedgate/v1/feedgate_pb.js";

export { ErrorCode };

/** `ErrorCode.NOT_FOUND` -> `"NOT_FOUND"`; an unknown (newer) code -> `"UNKNOWN_<n>"`. */
export function codeName(code: number): string {
  const name = (ErrorCode as unknown as Record<number, string | undefined>)[code];
  return name === undefined ? `UNKNOWN_${code}` : name;
}

export interface ErrorFields {
  retryable?: boolean;
  retryAfterMs?: number;
  details?: Record<string, string>;
}

/** A coded error from the server (or, for a few client-side conditions, from this client). */
export class FeedgateError extends Error {
  /** The protocol's error code; compare with `ErrorCode.NOT_FOUND` etc. */
  readonly code: ErrorCode;
  /** Whether the same request may succeed later. */
  readonly retryable: boolean;
  /** When retryable: wait at least this long first (0: no advice). */
  readonly retryAfterMs: number;
  /** Machine-readable context, e.g. `{ limit: "128" }`. */
  readonly details: Record<string, string>;

  constructor(code: ErrorCode, message: string, fields: ErrorFields = {}) {
    super(`${codeName(code)}: ${message}`);
    this.name = "FeedgateError";
    this.code = code;
    this.retryable = fields.retryable ?? false;
    this.retryAfterMs = fields.retryAfterMs ?? 0;
    this.details = { ...(fields.details ?? {}) };
  }

  /** The code's name without the `ERROR_CODE_` prefix, e.g. `"NOT_FOUND"`. */
  get codeName(): string {
    return codeName(this.code);
  }

  static fromMessage(error: ErrorMessage | undefined): FeedgateError {
    if (error === undefined) {
      return new FeedgateError(ErrorCode.UNSPECIFIED, "the server gave no error");
    }
    return new FeedgateError(error.code, error.message, {
      retryable: error.retryable,
      retryAfterMs: error.retryAfterMs,
      details: error.details,
    });
  }
}

const CLOSE_CODES: Record<number, [ErrorCode, boolean]> = {
  1001: [ErrorCode.SHUTTING_DOWN, true],
  1009: [ErrorCode.LIMIT_EXCEEDED, false],
  4000: [ErrorCode.IDLE_TIMEOUT, true],
  4001: [ErrorCode.UNAUTHENTICATED, false],
  4008: [ErrorCode.SLOW_CONSUMER, true],
  4029: [ErrorCode.LIMIT_EXCEEDED, true],
};

/**
 * The connection ended; pending requests and open subscriptions fail with this. `closeCode` is
 * the WebSocket close code (1006 when it dropped without a close frame); `code` follows it: 1001
 * SHUTTING_DOWN, 4000 IDLE_TIMEOUT, 4008 SLOW_CONSUMER, 4029 LIMIT_EXCEEDED (these four are
 * `retryable`: reconnect and subscribe again), 4001 UNAUTHENTICATED (a bad, missing or expired
 * token: get a new one), 1009 LIMIT_EXCEEDED, anything else UNSPECIFIED.
 */
export class ConnectionClosedError extends FeedgateError {
  readonly closeCode: number;
  readonly reason: string;

  constructor(closeCode: number, reason: string) {
    const [code, retryable] = CLOSE_CODES[closeCode] ?? [ErrorCode.UNSPECIFIED, true];
    super(code, `connection closed (close code ${closeCode}): ${reason || "no reason given"}`, {
      retryable,
    });
    this.name = "ConnectionClosedError";
    this.closeCode = closeCode;
    this.reason = reason;
  }
}
