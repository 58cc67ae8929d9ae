/**
 * The client: one WebSocket, requests correlated by `request_id` (a Promise per request), events
 * routed to subscriptions by `subscription_id` (an async iterator or a callback per
 * subscription). Works with the standard `WebSocket` API: browsers, Node 22+, Deno, Bun; on Node
 * 20 pass `{ WebSocket }` from the `ws` package or run node with `--experimental-websocket`.
 * The protocol is described in docs/protocol.md; this module adds nothing to it.
 */

import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  type Authenticated,
  type Event as FeedEvent,
  type Published,
  RequestSchema,
  type Response,
  type ServerMessage,
  ServerMessageSchema,
  StartPosition,
  type SubscribeSchema,
  type Welcome,
} from "./gen/feedgate/v1/feedgate_pb.js";
import { ConnectionClosedError, ErrorCode, FeedgateError } from "./errors.js";
import { type ChangeCallback, MaterializedView } from "./view.js";

/**
 * Events an async-iterated subscription holds before its consumer reads them. When it is full
 * the client ends that subscription with `FeedgateError(SLOW_CONSUMER)` (thrown once the events
 * already queued have been read) and unsubscribes it on the server: nothing is dropped silently,
 * and one slow iterator never stalls the connection's other subscriptions.
 */
export const DEFAULT_QUEUE_SIZE = 10_000;

/** A constructor with the standard `WebSocket` API (the browser's, Node 22's, or `ws`). */
export type WebSocketConstructor = new (url: string) => WebSocket;

export interface ConnectOptions {
  /** Bearer token sent in `Hello`, for servers that require authentication. */
  token?: string;
  /** Free-form name for the server's logs, e.g. "dashboard/1.4". */
  clientName?: string;
  /** The WebSocket implementation; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Per-subscription bound of the async-iterator queue (default 10,000 events). */
  queueSize?: number;
  /** Give up opening the connection after this long (default 10 s). */
  connectTimeoutMs?: number;
}

export type EventCallback = (event: FeedEvent) => void;

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
}

export interface TopicOptions extends SubscribeOptions {
  /** "latest" (default: what is published after subscribing), "earliest", or an offset. Kafka
   * and in-process topics serve all three (in-process ones from the messages the server still
   * keeps); RabbitMQ topics only "latest". */
  start?: "latest" | "earliest" | number | bigint;
}

export interface PublishOptions {
  key?: string;
  headers?: Record<string, string>;
  /** Delivered as the header `idempotency-key`, so consumers can drop duplicates of a retry. */
  idempotencyKey?: string;
}

type Command = MessageInitShape<typeof RequestSchema>["command"];
type Source = MessageInitShape<typeof SubscribeSchema>["source"];

interface Pending {
  resolve: (response: Response) => void;
  reject: (error: FeedgateError) => void;
}

/**
 * One subscription. Iterate it with `for await` to receive its `Event`s (ready, changes,
 * messages, source status); iteration ends after `unsubscribe()` and throws `FeedgateError`
 * when the server ends the subscription or the connection is lost. Created with `onEvent`, it
 * delivers to that callback instead.
 */
export class Subscription implements AsyncIterable<FeedEvent> {
  /** The id this client chose; every event for this subscription carries it. */
  readonly id: bigint;
  /** Resolves when `Ready` arrived (the initial rows, if any, are all delivered); rejects if
   * the subscription ended first. */
  readonly ready: Promise<void>;
  /** Resolves when the subscription has ended, with its error (undefined after unsubscribe). */
  readonly closed: Promise<FeedgateError | undefined>;
  /** The cursor of the last event with a position, for `resumeFrom`. */
  lastCursor: Uint8Array = new Uint8Array();

  private readonly client: Client;
  private readonly onEvent: EventCallback | undefined;
  private readonly queueSize: number;
  private queue: (FeedEvent | undefined)[] = [];
  private head = 0;
  private waiter: (() => void) | undefined;
  private ended = false;
  private failure: FeedgateError | undefined;
  private markReady!: () => void;
  private failReady!: (error: FeedgateError) => void;
  private markClosed!: (error: FeedgateError | undefined) => void;

  /** @internal */
  constructor(client: Client, id: bigint, onEvent: EventCallback | undefined, queueSize: number) {
    this.client = client;
    this.id = id;
    this.onEvent = onEvent;
    this.queueSize = queueSize;
    this.ready = new Promise<void>((resolve, reject) => {
      this.markReady = resolve;
      this.failReady = reject;
    });
    this.ready.catch(() => undefined); // nobody has to await it
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
  }

  /** Whether the subscription has ended (no further events will arrive). */
  get isClosed(): boolean {
    return this.ended;
  }

  /** Why the server or the connection ended it; undefined while open or after unsubscribe. */
  get error(): FeedgateError | undefined {
    return this.failure;
  }

  /** Ends the subscription; events queued before the server's `Unsubscribed` are still
   * yielded, none after it. */
  async unsubscribe(): Promise<void> {
    if (this.ended) return;
    await this.client.request({
      case: "unsubscribe",
      value: { subscriptionId: this.id },
    });
    this.client.end(this, undefined);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<FeedEvent> {
    if (this.onEvent !== undefined) {
      throw new TypeError("this subscription delivers to its onEvent callback");
    }
    for (;;) {
      while (this.head < this.queue.length) {
        const event = this.queue[this.head] as FeedEvent;
        this.queue[this.head++] = undefined;
        if (this.head > 1024 && this.head * 2 > this.queue.length) {
          this.queue = this.queue.slice(this.head);
          this.head = 0;
        }
        yield event;
      }
      if (this.ended) {
        if (this.failure !== undefined) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  /** @internal Called by the client's message handler. */
  deliver(event: FeedEvent): void {
    if (event.cursor.length > 0) this.lastCursor = event.cursor;
    if (event.body.case === "ready") this.markReady();
    if (this.onEvent !== undefined) {
      this.onEvent(event);
      return;
    }
    if (this.queue.length - this.head >= this.queueSize) {
      this.client.overflow(this, this.queueSize);
      return;
    }
    this.queue.push(event);
    this.wake();
  }

  /** @internal */
  finish(error: FeedgateError | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = error;
    this.failReady(error ?? new FeedgateError(ErrorCode.UNSPECIFIED, "unsubscribed before ready"));
    this.markClosed(error);
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }
}

/** A connection to a feedgate server; create it with `await Client.connect(url)`. */
export class Client {
  /** The server's `Welcome` (session id, server version, limits). */
  welcome: Welcome | undefined;

  private readonly ws: WebSocket;
  private readonly queueSize: number;
  private nextRequestId = 1n;
  private nextSubscriptionId = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private readonly subscriptions = new Map<bigint, Subscription>();
  private closedError: FeedgateError | undefined;
  private closing = false;
  private readonly closedPromise: Promise<void>;

  private constructor(ws: WebSocket, queueSize: number) {
    this.ws = ws;
    this.queueSize = queueSize;
    let closed!: () => void;
    this.closedPromise = new Promise((resolve) => (closed = resolve));
    ws.addEventListener("message", (message) => this.onMessage(message.data));
    ws.addEventListener("close", (close) => {
      this.shut(undefined, close.code, close.reason);
      closed();
    });
    // Some implementations report a dropped connection with "error" alone.
    ws.addEventListener("error", () => {
      if (ws.readyState === 3 /* CLOSED */) {
        this.shut(undefined, 1006, "connection failed");
        closed();
      }
    });
  }

  /** Opens a connection to `ws://host:port/v1/ws` and says `Hello` (with the token, if any). */
  static async connect(url: string, options: ConnectOptions = {}): Promise<Client> {
    const Impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (Impl === undefined) {
      throw new TypeError(
        "no WebSocket implementation: pass { WebSocket } (e.g. from the 'ws' package), " +
          "or run Node 22+ (Node 20: --experimental-websocket)",
      );
    }
    const ws = new Impl(url);
    ws.binaryType = "arraybuffer";
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.close();
        reject(new ConnectionClosedError(1006, `no connection after ${timeoutMs} ms`));
      }, timeoutMs);
      ws.addEventListener("open", () => {
        clearTimeout(timer);
        resolve();
      });
      ws.addEventListener("close", (close) => {
        clearTimeout(timer);
        reject(new ConnectionClosedError(close.code, close.reason || `cannot connect to ${url}`));
      });
      // Some implementations report a failed connection with "error" alone.
      ws.addEventListener("error", () => {
        clearTimeout(timer);
        reject(new ConnectionClosedError(1006, `cannot connect to ${url}`));
      });
    });
    const client = new Client(ws, options.queueSize ?? DEFAULT_QUEUE_SIZE);
    try {
      await client.hello(options.token ?? "", options.clientName ?? "");
    } catch (error) {
      await client.close();
      throw error;
    }
    return client;
  }

  /** Sends `Hello` (protocol version 1) and returns the `Welcome`. `connect` already did. */
  async hello(token = "", clientName = ""): Promise<Welcome> {
    const response = await this.request({
      case: "hello",
      value: { protocolVersion: 1, token, clientName },
    });
    this.welcome = (response.result.value as Welcome | undefined) ?? this.welcome;
    return this.welcome as Welcome;
  }

  /** Subscribes to a PostgreSQL table's changes ("schema.table" or "table"). */
  subscribeTable(table: string, options: TableOptions = {}): Promise<Subscription> {
    return this.subscribe(
      {
        case: "table",
        value: {
          table,
          includeInitial: options.includeInitial ?? false,
        },
      },
      options,
    );
  }

  /** Subscribes to a topic. */
  subscribeTopic(topic: string, options: TopicOptions = {}): Promise<Subscription> {
    const start = options.start ?? "latest";
    let position = StartPosition.LATEST;
    let offset = 0n;
    if (start === "earliest") {
      position = StartPosition.EARLIEST;
    } else if (typeof start === "number" || typeof start === "bigint") {
      position = StartPosition.OFFSET;
      offset = BigInt(start);
    } else if (start !== "latest") {
      return Promise.reject(new TypeError(`start must be "latest", "earliest" or an offset`));
    }
    return this.subscribe(
      {
        case: "topic",
        value: { topic, start: position, startOffset: offset },
      },
      options,
    );
  }

  /** Publishes to a topic; resolves once its backend accepted the message. */
  async publish(
    topic: string,
    payload: Uint8Array | string,
    options: PublishOptions = {},
  ): Promise<Published> {
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
    return response.result.value as Published;
  }

  /** Authenticates with `token`, or refreshes the connection's token before it expires (same
   * user and tenant); resolves to who the connection is and until when. A refused token rejects
   * with a `FeedgateError` (UNAUTHENTICATED) and changes nothing. */
  async authenticate(token: string): Promise<Authenticated> {
    const response = await this.request({ case: "authenticate", value: { token } });
    return response.result.value as Authenticated;
  }

  /** A round trip; resolves to the server's clock (µs since the epoch). Every event queued for
   * this client before the ping has been delivered when it resolves. */
  async ping(): Promise<bigint> {
    const response = await this.request({ case: "ping", value: {} });
    return response.result.case === "pong" ? response.result.value.serverTimeMicros : 0n;
  }

  /** A live `Map` of `table`'s rows keyed by primary key; `await view.waitReady()` first. */
  async materializedView(
    table: string,
    options: { onChange?: ChangeCallback } = {},
  ): Promise<MaterializedView> {
    const view = new MaterializedView(this, table, options.onChange);
    await view.start();
    return view;
  }

  /** Closes the connection: subscriptions end (iteration stops without an error), pending
   * requests reject with `ConnectionClosedError`. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.ws.readyState !== 3 /* CLOSED */) this.ws.close(1000, "client closed");
    await this.closedPromise;
  }

  /** @internal */
  async subscribe(source: Source, options: SubscribeOptions): Promise<Subscription> {
    const id = this.nextSubscriptionId++;
    const subscription = new Subscription(
      this,
      id,
      options.onEvent,
      options.queueSize ?? this.queueSize,
    );
    // Registered before the request leaves: events can follow `Subscribed` at once.
    this.subscriptions.set(id, subscription);
    try {
      await this.request({
        case: "subscribe",
        value: {
          subscriptionId: id,
          source,
          resumeFrom: options.resumeFrom ?? new Uint8Array(),
        },
      });
    } catch (error) {
      this.subscriptions.delete(id);
      throw error;
    }
    return subscription;
  }

  /** @internal Sends one request; resolves with its response, rejects with its error. */
  request(command: Command): Promise<Response> {
    if (this.closedError !== undefined) return Promise.reject(this.closedError);
    const requestId = this.nextRequestId++;
    const response = new Promise<Response>((resolve, reject) => {
      this.pending.set(requestId, { resolve, reject });
    });
    try {
      this.ws.send(toBinary(RequestSchema, create(RequestSchema, { requestId, command })));
    } catch (error) {
      this.pending.delete(requestId);
      return Promise.reject(new ConnectionClosedError(1006, `cannot send: ${String(error)}`));
    }
    return response.then((answer) => {
      if (answer.result.case === "error") throw FeedgateError.fromMessage(answer.result.value);
      return answer;
    });
  }

  /** @internal */
  end(subscription: Subscription, error: FeedgateError | undefined): void {
    if (this.subscriptions.get(subscription.id) === subscription) {
      this.subscriptions.delete(subscription.id);
    }
    subscription.finish(error);
  }

  /** @internal */
  overflow(subscription: Subscription, queueSize: number): void {
    this.fail(
      subscription,
      ErrorCode.SLOW_CONSUMER,
      `client-side queue of ${queueSize} events is full: the subscription was not read fast ` +
        "enough and has been ended",
      true,
    );
  }

  /** Ends a subscription on this side with a client-made error, and on the server. */
  private fail(subscription: Subscription, code: ErrorCode, message: string, retryable: boolean): void {
    const details = { subscription_id: subscription.id.toString() };
    this.end(subscription, new FeedgateError(code, message, { retryable, details }));
    this.request({
      case: "unsubscribe",
      value: { subscriptionId: subscription.id },
    }).catch(() => undefined);
  }

  private onMessage(data: unknown): void {
    let message: ServerMessage;
    try {
      if (!(data instanceof ArrayBuffer)) throw new TypeError("the server sent a text frame");
      message = fromBinary(ServerMessageSchema, new Uint8Array(data));
    } catch (error) {
      // A frame this client cannot read: the stream can no longer be trusted.
      this.shut(
        new FeedgateError(ErrorCode.INVALID_MESSAGE, `undecodable server message: ${String(error)}`),
        1002,
        "",
      );
      this.ws.close(4002, "undecodable server message");
      return;
    }
    if (message.message.case === "response") {
      const response = message.message.value;
      const pending = this.pending.get(response.requestId);
      if (pending !== undefined) {
        this.pending.delete(response.requestId);
        pending.resolve(response);
      }
    } else if (message.message.case === "event") {
      const event = message.message.value;
      const subscription = this.subscriptions.get(event.subscriptionId);
      if (subscription === undefined) return; // ended here already (overflow)
      if (event.body.case === "closed") {
        this.end(subscription, FeedgateError.fromMessage(event.body.value.error));
        return;
      }
      try {
        subscription.deliver(event);
      } catch (error) {
        // The subscriber's callback threw: end that subscription only.
        this.fail(subscription, ErrorCode.INTERNAL, `the onEvent callback threw: ${String(error)}`, false);
      }
    }
  }

  private shut(failure: FeedgateError | undefined, code: number, reason: string): void {
    if (this.closedError !== undefined) return;
    const closed = failure ?? new ConnectionClosedError(code, reason);
    this.closedError = closed;
    for (const pending of this.pending.values()) pending.reject(closed);
    this.pending.clear();
    for (const subscription of [...this.subscriptions.values()]) {
      this.end(subscription, this.closing && failure === undefined ? undefined : closed);
    }
  }
}
