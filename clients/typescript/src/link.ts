/**
 * The client's link to the server: one connection at a time, the connection state, and the
 * reconnect loop (wait, dial, `Hello`, let the owner resubscribe, open).
 *
 * Knows nothing of subscriptions or of requests waiting for the connection: its owner (the
 * `Client`) resubscribes when asked to resume a new connection, sends what waited when told the
 * link is open, and ends everything when told it closed. The rules (backoff, final ends) come
 * from `reconnect.ts`; one socket's requests from `connection.ts`.
 */

import type { Event as FeedEvent, Welcome } from "./gen/feedgate/v1/feedgate_pb.js";
import { Connection, type WebSocketConstructor } from "./connection.js";
import { ConnectionClosedError, ErrorCode, FeedgateError } from "./errors.js";
import {
  backoffDelay,
  type ConnectionState,
  type ReconnectPolicy,
  reconnectsAfter,
  resolveToken,
  type StateChangeCallback,
  type TokenSource,
} from "./reconnect.js";

/** Where and how to connect. */
export interface LinkSettings {
  url: string;
  WebSocket: WebSocketConstructor;
  token: TokenSource | undefined;
  clientName: string;
  /** Bounds one attempt, from dialling to the `Welcome`. */
  connectTimeoutMs: number;
  /** Undefined when reconnecting is off. */
  policy: ReconnectPolicy | undefined;
}

/** What the link asks of its owner. */
export interface LinkOwner {
  /** Every event of the current connection, in order. */
  onEvent(event: FeedEvent): void;
  /** A reconnect's new connection said `Hello`: subscribe everything again on it; resolve once
   * the server answered, reject (with its `lost`) if the connection ends first. */
  resume(connection: Connection): Promise<void>;
  /** The state turned "open" on `connection` (first connection or reconnect). */
  opened(connection: Connection): void;
  /** The link closed for good: `error` is why, undefined after `close()`. Called before the
   * state turns "closed". */
  closed(error: FeedgateError | undefined, closedError: FeedgateError): void;
}

export class Link {
  /** The server's `Welcome` on the current connection. */
  welcome: Welcome | undefined;

  readonly #settings: LinkSettings;
  readonly #owner: LinkOwner;
  #state: ConnectionState = "connecting";
  readonly #listeners = new Set<StateChangeCallback>();
  /** The socket in use: open, or being set up by an attempt to (re)connect. */
  #connection: Connection | undefined;
  /** Why the link closed; undefined until it does. */
  #closedError: FeedgateError | undefined;
  /** Resolves when the last socket has closed, once the link has. */
  #socketClosed: Promise<void> = Promise.resolve();
  /** Failed attempts to reconnect in a row (the backoff's attempt number). */
  #attempt = 0;
  /** The drop that started the current reconnect. */
  #dropped: ConnectionClosedError | undefined;
  #attemptTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(settings: LinkSettings, owner: LinkOwner) {
    this.#settings = settings;
    this.#owner = owner;
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The open connection, or undefined while not open. */
  get connection(): Connection | undefined {
    return this.#state === "open" ? this.#connection : undefined;
  }

  /** The connection whose server holds what was sent on it: the open one, or the one a
   * reconnect is setting up. */
  get current(): Connection | undefined {
    return this.#connection;
  }

  /** Why the link closed; undefined while it has not. */
  get closedError(): FeedgateError | undefined {
    return this.#closedError;
  }

  get policy(): ReconnectPolicy | undefined {
    return this.#settings.policy;
  }

  onStateChange(callback: StateChangeCallback): () => void {
    this.#listeners.add(callback);
    return () => this.#listeners.delete(callback);
  }

  /** The first connection: "connecting", then "open"; not retried: rejects as it fails, and
   * the link is closed then. */
  async start(): Promise<void> {
    this.#emit("connecting", undefined);
    try {
      await this.#dial();
    } catch (error) {
      this.#finish(asFeedgateError(error));
      await this.#socketClosed;
      throw error;
    }
    this.#open();
  }

  /** Closes for good (the application's `close()`); resolves once the socket has closed. */
  async close(): Promise<void> {
    this.#finish(undefined);
    await this.#socketClosed;
  }

  /** One attempt to connect: a token, a socket, `Hello` and its `Welcome`, within the connect
   * timeout. Leaves the socket in `#connection`; rejects with why the attempt failed. */
  async #dial(): Promise<void> {
    const { url, WebSocket, token: source, clientName, connectTimeoutMs } = this.#settings;
    const deadline = Date.now() + connectTimeoutMs;
    const token = await resolveToken(source);
    const connection = await Connection.open(WebSocket, url, connectTimeoutMs, {
      onEvent: (event) => this.#owner.onEvent(event),
      onLost: (lost, error) => this.#lost(lost, error),
    });
    if (this.#closedError !== undefined) {
      // close() was called while the socket opened.
      void connection.close(this.#closedError);
      throw this.#closedError;
    }
    this.#connection = connection;
    const timer = setTimeout(
      () => connection.abort(new ConnectionClosedError(1006, `no Welcome within ${connectTimeoutMs} ms`)),
      Math.max(0, deadline - Date.now()),
    );
    try {
      const response = await connection.request({ case: "hello", value: { protocolVersion: 1, token, clientName, bundles: true } });
      if (response.result.case === "welcome") this.welcome = response.result.value;
    } finally {
      clearTimeout(timer);
    }
  }

  #open(): void {
    const connection = this.#connection as Connection; // #dial left it there
    this.#attempt = 0;
    this.#setState("open", undefined);
    this.#owner.opened(connection);
  }

  /** The socket in use ended by itself (not by `close()`). */
  #lost(connection: Connection, error: FeedgateError): void {
    if (connection !== this.#connection) return;
    this.#connection = undefined;
    // While connecting or reconnecting, the attempt sees its requests fail and decides.
    if (this.#state !== "open") return;
    if (this.#settings.policy === undefined || !reconnectsAfter(error)) {
      this.#finish(error);
      return;
    }
    this.#attempt = 0;
    // reconnectsAfter() holds: a close, not this client's decode failure.
    this.#dropped = error as ConnectionClosedError;
    this.#setState("reconnecting", error);
    this.#scheduleAttempt(error);
  }

  /** Waits before the next attempt, or closes the link once `maxAttempts` failed in a row
   * (`last` is the latest failure). */
  #scheduleAttempt(last: FeedgateError): void {
    const policy = this.#settings.policy as ReconnectPolicy; // only called while reconnecting is on
    if (policy.maxAttempts !== undefined && this.#attempt >= policy.maxAttempts) {
      const closeCode = this.#dropped?.closeCode ?? 1006;
      const reason = `gave up reconnecting after ${this.#attempt} attempts; the last: ${last.message}`;
      this.#finish(new ConnectionClosedError(closeCode, reason));
      return;
    }
    this.#attemptTimer = setTimeout(() => void this.#reconnect(), backoffDelay(policy, this.#attempt));
  }

  /** One attempt to reconnect: dial, let the owner resubscribe, then open. */
  async #reconnect(): Promise<void> {
    this.#attemptTimer = undefined;
    try {
      await this.#dial();
      await this.#owner.resume(this.#connection as Connection); // #dial left it there
      if (this.#connection === undefined) throw new ConnectionClosedError(1006, "lost while resubscribing");
    } catch (error) {
      if (this.#closedError !== undefined) return; // closed meanwhile
      const connection = this.#connection;
      this.#connection = undefined;
      const cause = asFeedgateError(error);
      if (connection !== undefined) void connection.close(cause, "reconnect attempt failed");
      if (!reconnectsAfter(error)) {
        this.#finish(cause);
        return;
      }
      this.#attempt += 1;
      this.#scheduleAttempt(cause);
      return;
    }
    if (this.#closedError === undefined) this.#open();
  }

  /** Closes for good: with `error` when the server, the network or giving up ended the link,
   * without one when the application called `close()`. */
  #finish(error: FeedgateError | undefined): void {
    if (this.#closedError !== undefined) return;
    clearTimeout(this.#attemptTimer);
    this.#attemptTimer = undefined;
    const closed = error ?? new ConnectionClosedError(1000, "closed by the application");
    this.#closedError = closed;
    const connection = this.#connection;
    this.#connection = undefined;
    if (connection !== undefined) this.#socketClosed = connection.close(closed);
    this.#owner.closed(error, closed);
    this.#setState("closed", error);
  }

  #setState(state: ConnectionState, error: FeedgateError | undefined): void {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit(state, error);
  }

  #emit(state: ConnectionState, error: FeedgateError | undefined): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(state, error);
      } catch (thrown) {
        report("an onStateChange callback threw", thrown);
      }
    }
  }
}

/** An application callback's exception: reported as an event listener's would be (the
 * browser's `reportError`; `console.error` where there is none), and the link carries on. */
function report(what: string, error: unknown): void {
  const reportError = (globalThis as { reportError?: (error: unknown) => void }).reportError;
  if (reportError !== undefined) reportError(error);
  else console.error(`feedgate: ${what}:`, error);
}

function asFeedgateError(error: unknown): FeedgateError {
  if (error instanceof FeedgateError) return error;
  return new FeedgateError(ErrorCode.UNSPECIFIED, `cannot connect: ${String(error)}`, { retryable: true });
}
