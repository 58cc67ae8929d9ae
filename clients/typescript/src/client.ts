/**
 * The client: requests as Promises, events routed to subscriptions by `subscription_id`, over
 * one WebSocket at a time; when that one drops, a new one (see `link.ts`) on which the client
 * subscribes every subscription again under its id from its last cursor, so that each one's
 * stream continues as if nothing happened. Requests made meanwhile wait for it.
 *
 * Works with the standard `WebSocket` API: browsers, Node 22+, Deno, Bun; on Node 20 pass
 * `{ WebSocket }` from the `ws` package or run node with `--experimental-websocket`. The protocol
 * is described in docs/protocol.md. One socket's requests and frames live in `connection.ts`,
 * the connection state and reconnect loop in `link.ts`, the reconnect rules in `reconnect.ts`,
 * a subscription's own state in `subscription.ts`.
 */

import {
  type Authenticated,
  type Catalog,
  type Event as FeedEvent,
  type Published,
  type Response,
  StartPosition,
  type Welcome,
} from "./gen/feedgate/v1/feedgate_pb.js";
import { type Command, Connection, type WebSocketConstructor } from "./connection.js";
import { ErrorCode, FeedgateError } from "./errors.js";
import type { Filter } from "./filters.js";
import { Link, type LinkSettings } from "./link.js";
import {
  backoffDelay,
  type ConnectionState,
  DEFAULT_RECONNECT,
  type ReconnectOptions,
  reconnectPolicy,
  type StateChangeCallback,
  type TokenSource,
} from "./reconnect.js";
import { type EventCallback, type Source, Subscription } from "./subscription.js";
import { MaterializedView, type ViewOptions } from "./view.js";

/**
 * Events an async-iterated subscription holds before its consumer reads them. When it is full
 * the client ends that subscription with `FeedgateError(SLOW_CONSUMER)` (thrown once the events
 * already queued have been read) and unsubscribes it on the server: nothing is dropped silently,
 * and one slow iterator never stalls the connection's other subscriptions.
 */
export const DEFAULT_QUEUE_SIZE = 10_000;

/** How long one attempt to connect may take, from dialling to the server's `Welcome`. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export interface ConnectOptions {
  /** Bearer token sent in `Hello`, for servers that require authentication; a function is
   * called before every connection's `Hello` (the first and each reconnect). */
  token?: TokenSource;
  /** Free-form name for the server's logs, e.g. "dashboard/1.4". */
  clientName?: string;
  /** The WebSocket implementation; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Per-subscription bound of the async-iterator queue (default 10,000 events). */
  queueSize?: number;
  /** Give up an attempt to connect (opening the WebSocket and the `Welcome`) after this long
   * (default 10 s). */
  connectTimeoutMs?: number;
  /** Reconnect after a dropped connection: `true` (default) with the default backoff, `false`
   * (a drop closes the client and ends its subscriptions with `ConnectionClosedError`), or
   * the backoff's options. */
  reconnect?: boolean | ReconnectOptions;
  /** Called on every change of `client.state` (first with "connecting"). */
  onStateChange?: StateChangeCallback;
}

export interface SubscribeOptions {
  /** Resume after this cursor (from `Event.cursor`); sources that cannot answer RESUME_UNAVAILABLE. */
  resumeFrom?: Uint8Array;
  /** Deliver events to this callback (called as they arrive) instead of the async iterator. */
  onEvent?: EventCallback;
  /** This subscription's async-iterator queue bound. */
  queueSize?: number;
}

export interface TableOptions extends SubscribeOptions {
  /** Send every existing row as an INITIAL change before `Ready`. */
  includeInitial?: boolean;
  /** Only the rows this filter matches (`col(...)` builders): rows moving into it arrive as
   * INSERTs, out of it as DELETEs. */
  filter?: Filter;
  /** Only these columns (and the primary key's) in rows; updates of other columns are not sent. */
  columns?: string[];
  /** Squash: at most one event per row per this many milliseconds (1 to 60,000; default 0:
   * every change). A row's changes within the interval collapse into one, delivered with the
   * interval's others as one batch. */
  minIntervalMs?: number;
}

export interface TopicOptions extends SubscribeOptions {
  /** "latest" (default: what is published after subscribing), "earliest", or an offset. Kafka
   * and in-process topics serve all three (in-process ones from the messages the server still
   * keeps); RabbitMQ topics only "latest". */
  start?: "latest" | "earliest" | number | bigint;
  /** Only the messages this filter matches (`path(...)`, `key()`, `header(...)` builders). */
  filter?: Filter;
  /** Squash: at most one message per key per this many milliseconds (1 to 60,000; default 0:
   * every message), the latest; messages without a key are all kept. Delivered as one batch
   * per interval. */
  minIntervalMs?: number;
}

export interface PublishOptions {
  key?: string;
  headers?: Record<string, string>;
  /** Delivered as the header `idempotency-key`, so consumers can drop duplicates of a retry. */
  idempotencyKey?: string;
}

/** A request made while the client is not open: sent when it is, failed if it closes. */
interface Waiting {
  send: (connection: Connection) => void;
  fail: (error: FeedgateError) => void;
}

/** A connection to a feedgate server; create it with `await Client.connect(url)`. */
export class Client {
  readonly #link: Link;
  readonly #queueSize: number;
  /** Requests made while not open, in order. */
  #waiting: Waiting[] = [];
  #nextSubscriptionId = 1n;
  /** Every active subscription, in id order (ids only grow). */
  readonly #subscriptions = new Map<bigint, Subscription>();

  private constructor(url: string, Impl: WebSocketConstructor, options: ConnectOptions) {
    this.#queueSize = options.queueSize ?? DEFAULT_QUEUE_SIZE;
    const settings: LinkSettings = {
      url,
      WebSocket: Impl,
      token: options.token,
      clientName: options.clientName ?? "",
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      policy: reconnectPolicy(options.reconnect),
    };
    this.#link = new Link(settings, {
      onEvent: (event) => this.#route(event),
      resume: (connection) => this.#resubscribeAll(connection),
      opened: (connection) => {
        for (const waiting of this.#waiting.splice(0)) waiting.send(connection);
      },
      closed: (error, closed) => {
        for (const waiting of this.#waiting.splice(0)) waiting.fail(closed);
        for (const subscription of [...this.#subscriptions.values()]) this.end(subscription, error);
      },
    });
    if (options.onStateChange !== undefined) this.#link.onStateChange(options.onStateChange);
  }

  /**
   * Opens a connection to `ws://host:port/v1/ws` and says `Hello` (with the token, if any).
   * This first connection is not retried: it rejects as it fails.
   */
  static async connect(url: string, options: ConnectOptions = {}): Promise<Client> {
    const Impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (Impl === undefined) {
      throw new TypeError(
        "no WebSocket implementation: pass { WebSocket } (e.g. from the 'ws' package), " +
          "or run Node 22+ (Node 20: --experimental-websocket)",
      );
    }
    const client = new Client(url, Impl, options);
    await client.#link.start();
    return client;
  }

  /** The server's `Welcome` (session id, server version, limits) on the current connection. */
  get welcome(): Welcome | undefined {
    return this.#link.welcome;
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  get state(): ConnectionState {
    return this.#link.state;
  }

  /** Calls `callback(state, error)` on every state change; returns a function that stops it. */
  onStateChange(callback: StateChangeCallback): () => void {
    return this.#link.onStateChange(callback);
  }

  /** Sends `Hello` (protocol version 1) and returns the `Welcome`. `connect` already did, and
   * every reconnect does again. */
  async hello(token = "", clientName = ""): Promise<Welcome> {
    const response = await this.request({
      case: "hello",
      value: { protocolVersion: 1, token, clientName, bundles: true },
    });
    if (response.result.case === "welcome") this.#link.welcome = response.result.value;
    return this.#link.welcome as Welcome;
  }

  /** Subscribes to a PostgreSQL table's changes ("schema.table" or "table"). */
  async subscribeTable(table: string, options: TableOptions = {}): Promise<Subscription> {
    const feed = {
      table,
      includeInitial: options.includeInitial ?? false,
      filter: options.filter?.message,
      columns: options.columns ?? [],
      minIntervalMs: minInterval(options.minIntervalMs),
    };
    return this.subscribe({ case: "table", value: feed }, options);
  }

  /** Subscribes to a topic. */
  async subscribeTopic(topic: string, options: TopicOptions = {}): Promise<Subscription> {
    const start = options.start ?? "latest";
    let position = StartPosition.LATEST;
    let offset = 0n;
    if (start === "earliest") {
      position = StartPosition.EARLIEST;
    } else if (typeof start === "number" || typeof start === "bigint") {
      position = StartPosition.OFFSET;
      offset = BigInt(start);
    } else if (start !== "latest") {
      throw new TypeError(`start must be "latest", "earliest" or an offset`);
    }
    const feed = {
      topic,
      start: position,
      startOffset: offset,
      filter: options.filter?.message,
      minIntervalMs: minInterval(options.minIntervalMs),
    };
    return this.subscribe({ case: "topic", value: feed }, options);
  }

  /** Publishes to a topic; resolves once its backend accepted the message. A publish in flight
   * when the connection drops rejects (retryable) and is not sent again: it may have been
   * accepted. */
  async publish(topic: string, payload: Uint8Array | string, options: PublishOptions = {}): Promise<Published> {
    const response = await this.request({
      case: "publish",
      value: {
        topic,
        payload: typeof payload === "string" ? new TextEncoder().encode(payload) : payload,
        key: options.key ?? "",
        headers: { ...(options.headers ?? {}) },
        idempotencyKey: options.idempotencyKey ?? "",
      },
    });
    if (response.result.case !== "published") throw unexpected(response);
    return response.result.value;
  }

  /** Authenticates with `token`, or refreshes the connection's token before it expires (same
   * user and tenant); resolves to who the connection is and until when. A refused token rejects
   * with a `FeedgateError` (UNAUTHENTICATED) and changes nothing. A reconnect authenticates with
   * `ConnectOptions.token`, not with this one. */
  async authenticate(token: string): Promise<Authenticated> {
    const response = await this.request({ case: "authenticate", value: { token } });
    if (response.result.case !== "authenticated") throw unexpected(response);
    return response.result.value;
  }

  /** What this connection may subscribe to: the watched tables (name, columns with their
   * PostgreSQL type and `Value` kind, primary key) and the topic routes (pattern, backend,
   * whether history and resume are available, whether it may publish), as its permissions
   * allow. `catalog.tablesError` says why tables could not be listed, when they could not. */
  async catalog(): Promise<Catalog> {
    const response = await this.request({ case: "getCatalog", value: {} });
    if (response.result.case !== "catalog") throw unexpected(response);
    return response.result.value;
  }

  /** A round trip; resolves to the server's clock (µs since the epoch). Every event queued for
   * this client before the ping has been delivered when it resolves. */
  async ping(): Promise<bigint> {
    const response = await this.request({ case: "ping", value: {} });
    return response.result.case === "pong" ? response.result.value.serverTimeMicros : 0n;
  }

  /** A live `Map` of `table`'s rows keyed by primary key; `await view.waitReady()` first. */
  async materializedView(table: string, options: ViewOptions = {}): Promise<MaterializedView> {
    const view = new MaterializedView(this, table, options);
    await view.start();
    return view;
  }

  /** Closes the connection for good: state "closed", subscriptions end (iteration stops
   * without an error), pending and waiting requests reject with `ConnectionClosedError`. */
  async close(): Promise<void> {
    await this.#link.close();
  }

  /** @internal */
  async subscribe(source: Source, options: SubscribeOptions): Promise<Subscription> {
    const id = this.#nextSubscriptionId++;
    const queueSize = options.queueSize ?? this.#queueSize;
    const subscription = new Subscription(this, id, source, options.resumeFrom, options.onEvent, queueSize);
    // Registered before the request leaves: events can follow `Subscribed` at once.
    this.#subscriptions.set(id, subscription);
    try {
      await this.#whenOpen((connection) => {
        subscription.server = connection;
        return connection.request(subscription.subscribeCommand());
      });
    } catch (error) {
      subscription.server = undefined;
      this.end(subscription, undefined);
      throw error;
    }
    subscription.established = true;
    return subscription;
  }

  /** @internal Sends one request once the client is open; resolves with its response, rejects
   * with its error, or with `ConnectionClosedError` if the connection drops before it is
   * answered (retryable) or the client closes first. */
  request(command: Command): Promise<Response> {
    return this.#whenOpen((connection) => connection.request(command));
  }

  /** @internal Ends `subscription` on the server if the current one holds it, then here. */
  async unsubscribe(subscription: Subscription): Promise<void> {
    const connection = this.#link.current;
    if (connection !== undefined && subscription.server === connection) {
      try {
        await connection.request({ case: "unsubscribe", value: { subscriptionId: subscription.id } });
      } catch (error) {
        // A connection that dropped meanwhile took the subscription with it.
        if (connection.lost === undefined) throw error;
      }
    }
    this.end(subscription, undefined);
  }

  /** @internal */
  end(subscription: Subscription, error: FeedgateError | undefined): void {
    if (this.#subscriptions.get(subscription.id) === subscription) {
      this.#subscriptions.delete(subscription.id);
    }
    subscription.finish(error);
  }

  /** @internal */
  overflow(subscription: Subscription, queueSize: number): void {
    this.fail(
      subscription,
      new FeedgateError(
        ErrorCode.SLOW_CONSUMER,
        `client-side queue of ${queueSize} events is full: the subscription was not read fast ` +
          "enough and has been ended",
        { retryable: true, details: { subscription_id: subscription.id.toString() } },
      ),
    );
  }

  /** @internal How long to wait before retrying a request refused with `error` for the
   * `attempt`-th time in a row (0-based): the backoff, or the server's advice if longer. */
  retryDelay(attempt: number, error: FeedgateError): number {
    return Math.max(error.retryAfterMs, backoffDelay(this.#link.policy ?? DEFAULT_RECONNECT, attempt));
  }

  /** @internal Ends a subscription on this side with a client-made error, and on the server. */
  fail(subscription: Subscription, error: FeedgateError): void {
    const connection = this.#link.current;
    const onServer = connection !== undefined && subscription.server === connection;
    this.end(subscription, error);
    if (onServer) {
      connection.request({ case: "unsubscribe", value: { subscriptionId: subscription.id } }).catch(() => undefined);
    }
  }

  #whenOpen<T>(send: (connection: Connection) => Promise<T>): Promise<T> {
    const closed = this.#link.closedError;
    if (closed !== undefined) return Promise.reject(closed);
    const connection = this.#link.connection;
    if (connection !== undefined) return send(connection);
    return new Promise<T>((resolve, reject) => {
      this.#waiting.push({ send: (connection) => send(connection).then(resolve, reject), fail: reject });
    });
  }

  /**
   * Subscribes every established subscription again, in id order, under its id, from its last
   * cursor; resolves once the server answered each (a refusal ends or retries that one
   * subscription), rejects if the connection drops first.
   */
  async #resubscribeAll(connection: Connection): Promise<void> {
    const answers: Promise<void>[] = [];
    for (const subscription of [...this.#subscriptions.values()]) {
      if (!subscription.established) continue; // its own Subscribe is waiting in #waiting
      if (subscription.lastCursor.length === 0) {
        this.end(subscription, noPosition(subscription));
        continue;
      }
      answers.push(this.#resubscribe(connection, subscription));
    }
    await Promise.all(answers);
  }

  async #resubscribe(connection: Connection, subscription: Subscription): Promise<void> {
    subscription.server = connection;
    try {
      await connection.request(subscription.resumeCommand());
      subscription.retries = 0;
    } catch (error) {
      if (connection.lost !== undefined || !(error instanceof FeedgateError)) throw error;
      subscription.server = undefined;
      this.#refused(connection, subscription, error);
    }
  }

  /** A resubscribe answered with `error`: retried later on the same connection if retryable,
   * else the subscription ends with it. */
  #refused(connection: Connection, subscription: Subscription, error: FeedgateError): void {
    if (subscription.isClosed) return;
    const maxAttempts = this.#link.policy?.maxAttempts;
    if (!error.retryable || (maxAttempts !== undefined && subscription.retries + 1 >= maxAttempts)) {
      this.end(subscription, error);
      return;
    }
    const delay = this.retryDelay(subscription.retries++, error);
    subscription.retryTimer = setTimeout(() => {
      subscription.retryTimer = undefined;
      if (subscription.isClosed || this.#link.current !== connection) return;
      // A drop meanwhile: the next connection subscribes it again.
      this.#resubscribe(connection, subscription).catch(() => undefined);
    }, delay);
  }

  #route(event: FeedEvent): void {
    const subscription = this.#subscriptions.get(event.subscriptionId);
    if (subscription === undefined) return; // ended here already (overflow, unsubscribe)
    if (event.body.case === "closed") {
      subscription.server = undefined;
      this.end(subscription, FeedgateError.fromMessage(event.body.value.error));
      return;
    }
    try {
      subscription.deliver(event);
    } catch (error) {
      // The subscriber's callback threw: end that subscription only.
      this.fail(subscription, new FeedgateError(ErrorCode.INTERNAL, `the onEvent callback threw: ${String(error)}`));
    }
  }
}

/** The largest `uint32`, the type of `min_interval_ms`. */
const MAX_UINT32 = 0xffff_ffff;

/** `minIntervalMs` as the protocol carries it (a `uint32`, 0 when not set); throws `RangeError`
 * for what it cannot carry. Above 60,000 the server answers VALIDATION. */
function minInterval(value: number | undefined): number {
  const ms = value ?? 0;
  if (!(Number.isInteger(ms) && ms >= 0 && ms <= MAX_UINT32)) {
    throw new RangeError(`minIntervalMs must be a whole number of milliseconds (0 to 60,000), not ${ms}`);
  }
  return ms;
}

/** The client-made end of a subscription that had no position when its connection dropped. */
function noPosition(subscription: Subscription): FeedgateError {
  return new FeedgateError(
    ErrorCode.RESUME_UNAVAILABLE,
    "the connection dropped before the subscription had a position to resume from (no cursor " +
      "yet: during a table's initial rows, or a source whose events carry none); subscribe again",
    { retryable: true, details: { subscription_id: subscription.id.toString() } },
  );
}

function unexpected(response: Response): FeedgateError {
  return new FeedgateError(ErrorCode.UNSPECIFIED, `unexpected answer: ${response.result.case ?? "none"}`);
}
