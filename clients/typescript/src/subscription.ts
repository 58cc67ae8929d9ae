/**
 * One subscription as the application sees it: an async iterator (or a callback) of its events,
 * `ready` and `closed` promises, and `unsubscribe()`.
 *
 * A subscription outlives the connections it is carried on: after a reconnect the client
 * subscribes it again under the same id from `lastCursor`, and the stream continues as if
 * nothing happened (the server's second `Ready` is not delivered). This module keeps what that
 * takes (the feed as requested, the last cursor, whether `Ready` was delivered); `client.ts`
 * decides when to resubscribe. A squashing subscription's batches (`Event.more`) are delivered
 * whole, once their last event is in (`batch.ts`), and only a batch's end moves `lastCursor`.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Event as FeedEvent, SubscribeSchema } from "./gen/feedgate/v1/feedgate_pb.js";
import { Batch } from "./batch.js";
import { ErrorCode, FeedgateError } from "./errors.js";
import type { Client } from "./client.js";
import type { Command } from "./connection.js";
/** @internal A subscription's feed (table or topic), as requested. */
export type Source = MessageInitShape<typeof SubscribeSchema>["source"];

export type EventCallback = (event: FeedEvent) => void;

/** Above this many consumed slots the iterator's queue array is compacted. */
const COMPACT_AFTER = 1024;

/**
 * One subscription. Iterate it with `for await` to receive its `Event`s (ready, changes,
 * messages, source status); iteration ends after `unsubscribe()` and throws `FeedgateError`
 * when the server ends the subscription or the connection is lost for good. Created with
 * `onEvent`, it delivers to that callback instead. While the client reconnects it stays open.
 */
export class Subscription implements AsyncIterable<FeedEvent> {
  /** The id this client chose; every event for this subscription carries it, on every
   * connection. */
  readonly id: bigint;
  /** Resolves when `Ready` arrived (the initial rows, if any, are all delivered); rejects if
   * the subscription ended first. */
  readonly ready: Promise<void>;
  /** Resolves when the subscription has ended, with its error (undefined after unsubscribe). */
  readonly closed: Promise<FeedgateError | undefined>;
  /** The newest non-empty cursor of its events (`Ready`'s included) that ended their batch, or
   * the `resumeFrom` it was created with until one arrives: where a reconnect resumes it. The
   * events of a squashed batch but its last (those with `more`) do not move it. */
  lastCursor: Uint8Array;

  /** @internal The feed as the application requested it, subscribed again on reconnects. */
  readonly source: Source;
  /** @internal The connection (an opaque handle of the client's) whose server holds this
   * subscription: set when a Subscribe for it is sent, cleared when refused. */
  server: object | undefined;
  /** @internal Whether the server ever answered `Subscribed`: only those are resubscribed
   * (the others' own Subscribe is still waiting or failed). */
  established = false;
  /** @internal A resubscribe refused with a retryable error waits on this timer. */
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** @internal Resubscribes refused in a row (the backoff's attempt number). */
  retries = 0;

  private readonly client: Client;
  private readonly onEvent: EventCallback | undefined;
  private readonly queueSize: number;
  private queue: (FeedEvent | undefined)[] = [];
  private head = 0;
  /** The received part of a squashed batch, held until its last event. */
  private readonly batch = new Batch();
  private waiter: (() => void) | undefined;
  private ended = false;
  private failure: FeedgateError | undefined;
  /** Whether `Ready` was delivered: a resumed stream's `Ready` is then not delivered again. */
  private readySeen = false;
  private markReady!: () => void;
  private failReady!: (error: FeedgateError) => void;
  private markClosed!: (error: FeedgateError | undefined) => void;

  /** @internal */
  constructor(
    client: Client,
    id: bigint,
    source: Source,
    resumeFrom: Uint8Array | undefined,
    onEvent: EventCallback | undefined,
    queueSize: number,
  ) {
    this.client = client;
    this.id = id;
    this.source = source;
    this.lastCursor = resumeFrom ?? new Uint8Array();
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
   * yielded, none after it. While the client reconnects it just ends here (the next server
   * has nothing to forget). */
  async unsubscribe(): Promise<void> {
    if (this.ended) return;
    await this.client.unsubscribe(this);
  }

  /** @internal The Subscribe command: the feed as requested, from `lastCursor`. */
  subscribeCommand(): Command {
    return {
      case: "subscribe",
      value: { subscriptionId: this.id, source: this.source, resumeFrom: this.lastCursor },
    };
  }

  /** @internal The Subscribe command that resumes this subscription on a new connection. The
   * part of a batch the old connection delivered is dropped: the resume sends it again. */
  resumeCommand(): Command {
    this.batch.drop();
    return this.subscribeCommand();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<FeedEvent> {
    if (this.onEvent !== undefined) {
      throw new TypeError("this subscription delivers to its onEvent callback");
    }
    for (;;) {
      while (this.head < this.queue.length) yield this.take();
      if (this.ended) {
        if (this.failure !== undefined) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  /** @internal The next queued event, waiting at most `timeoutMs`: undefined when none came in
   * time or the subscription ended without an error; throws its error when it ended with one.
   * For the test helpers (`@feedgate/client/testing`), which wait with a deadline. */
  async nextWithin(timeoutMs: number): Promise<FeedEvent | undefined> {
    if (this.onEvent !== undefined) {
      throw new TypeError("this subscription delivers to its onEvent callback");
    }
    const deadline = Date.now() + timeoutMs;
    while (this.head >= this.queue.length && !this.ended) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) return undefined;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        timer = setTimeout(resolve, remaining);
      });
      clearTimeout(timer);
    }
    if (this.head < this.queue.length) return this.take();
    if (this.failure !== undefined) throw this.failure;
    return undefined;
  }

  /** @internal A round trip to the server on this subscription's client: every event the
   * server sent before it has been delivered when it resolves. */
  async barrier(): Promise<void> {
    await this.client.ping();
  }

  /** The queue's next event (there is one), compacting the queue now and then. */
  private take(): FeedEvent {
    const event = this.queue[this.head] as FeedEvent;
    this.queue[this.head++] = undefined;
    if (this.head > COMPACT_AFTER && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return event;
  }

  /** @internal Called by the client for each event of this subscription; held while it
   * continues a batch. */
  deliver(event: FeedEvent): void {
    let events: FeedEvent[];
    try {
      events = this.batch.add(event);
    } catch (error) {
      if (!(error instanceof FeedgateError)) throw error;
      this.client.fail(this, error); // a batch longer than any squash window
      return;
    }
    const last = events[events.length - 1];
    if (last === undefined) return;
    if (last.cursor.length > 0) this.lastCursor = last.cursor;
    const onEvent = this.onEvent;
    if (onEvent !== undefined) {
      for (const each of events) this.deliverOne(each, onEvent);
      return;
    }
    if (this.queue.length - this.head + events.length > this.queueSize) {
      this.client.overflow(this, this.queueSize); // a batch is queued whole or not at all
      return;
    }
    for (const each of events) this.deliverOne(each, (queued) => this.queue.push(queued));
    this.wake();
  }

  private deliverOne(event: FeedEvent, to: (event: FeedEvent) => void): void {
    if (event.body.case === "ready") {
      // A resumed subscription gets Ready again once caught up: the application saw it already.
      if (this.readySeen) return;
      this.readySeen = true;
      this.markReady();
    }
    to(event);
  }

  /** @internal */
  finish(error: FeedgateError | undefined): void {
    if (this.ended) return;
    this.batch.drop();
    this.ended = true;
    this.failure = error;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
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
