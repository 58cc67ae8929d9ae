/**
 * Batches of a squashing subscription (`minIntervalMs`): the events of one batch held until its
 * last one is in, then released together.
 *
 * The server sends what a squash window held as one batch, every event but the last with
 * `Event.more` set. A `Batch` holds the events with `more` and releases them with the event that
 * ends the batch, so that subscribers, iterators and views never see part of one, and so that
 * the position a subscription resumes from is always a batch's end (a cursor from the middle of
 * a batch would resume after rows the client never applied). A batch cut by a dropped connection
 * is dropped here: the resume sends its changes again. Events without `more` (every event of a
 * subscription that does not squash) pass straight through. No I/O and no timers: the
 * subscription feeds it (`subscription.ts`).
 */

import type { Event as FeedEvent } from "./gen/feedgate/v1/feedgate_pb.js";
import { ErrorCode, FeedgateError } from "./errors.js";

/**
 * Events one batch may have. The server sends a squash window early once it holds 10,000 rows
 * or keys (docs/changefeeds.md, "Squashing"), so no batch is longer: past this the subscription
 * ends with `LIMIT_EXCEEDED` rather than hold events without a bound.
 */
export const MAX_BATCH = 10_000;

/** The events received of the current batch, not yet released. */
export class Batch {
  readonly #limit: number;
  #held: FeedEvent[] = [];

  constructor(limit = MAX_BATCH) {
    this.#limit = limit;
  }

  /** Events held: received with `more`, waiting for their batch's last event. */
  get size(): number {
    return this.#held.length;
  }

  /**
   * What to deliver now that `event` arrived: nothing while it continues a batch (it is held),
   * else the batch it ends (the held events, then it), in order; a lone event alone. Throws
   * `FeedgateError` (LIMIT_EXCEEDED) when a batch grows past the limit; the held events are
   * dropped then.
   */
  add(event: FeedEvent): FeedEvent[] {
    if (!event.more) {
      if (this.#held.length === 0) return [event];
      const released = this.#held;
      this.#held = [];
      released.push(event);
      return released;
    }
    if (this.#held.length + 1 >= this.#limit) {
      this.#held = [];
      throw new FeedgateError(
        ErrorCode.LIMIT_EXCEEDED,
        `a squashed batch (Event.more) of more than ${this.#limit} events: more than the client ` +
          "holds, and more than a squash window sends",
        { details: { limit: String(this.#limit) } },
      );
    }
    this.#held.push(event);
    return [];
  }

  /** Drops the held part of a batch (its connection ended: the resume from the last whole
   * batch's cursor sends those changes again); returns how many events it held. */
  drop(): number {
    const dropped = this.#held.length;
    this.#held = [];
    return dropped;
  }
}
