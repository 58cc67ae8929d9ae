/**
 * Assertions on a subscription's events, with deadlines instead of sleeps.
 *
 * `expect` takes the subscription's next event and checks it; `expectSequence` the next
 * several, in order; `expectNothing` checks that none arrives for a while. They consume what
 * they read (the next helper, or `for await`, continues after it). READY and STATUS events are
 * passed over unless a spec asks for one. By default the next data event must be the expected
 * one, so that a test also asserts that nothing else came first (exactly once, in order);
 * `skip: true` passes over events that do not match. A helper that fails throws
 * `ExpectationFailed` (an `Error`, which node:test and Vitest report like their own assertion
 * errors) saying what was expected and listing what did arrive, field by field. Not here:
 * views (views.ts).
 */

import { FeedgateError } from "../errors.js";
import type { Subscription } from "../subscription.js";
import {
  type Check,
  describe,
  describeSpec,
  mismatches,
  type Received,
  received,
  type Spec,
  type SpecLike,
  toSpec,
  wanted,
} from "./events.js";

/** The deadline of a helper not given one, in milliseconds. */
export const DEFAULT_WITHIN_MS = 5_000;

/** An expectation on feedgate events did not hold; the message says what arrived. */
export class ExpectationFailed extends Error {
  override name = "ExpectationFailed";
}

export interface ExpectOptions {
  /** How long to wait, in milliseconds (default 5,000). */
  within?: number;
  /** Pass over events that do not match instead of failing at the first (default false). */
  skip?: boolean;
}

/** One helper call: reads the subscription against a deadline and keeps what it read. */
class Watch {
  readonly seen: Received[] = [];
  private readonly start = Date.now();

  constructor(
    private readonly subscription: Subscription,
    private readonly within: number,
  ) {}

  /** The next event; undefined at the deadline (at once when `wait` is false). An end of the
   * subscription fails the expectation. */
  async next(wait = true): Promise<Received | undefined> {
    let event;
    try {
      event = await this.subscription.nextWithin(wait ? Math.max(this.start + this.within - Date.now(), 0) : 0);
    } catch (error) {
      if (error instanceof FeedgateError) throw this.fail(`the subscription ended: ${error.message}`);
      throw error;
    }
    if (event === undefined) {
      if (this.subscription.isClosed) throw this.fail("the subscription ended (unsubscribed or client closed)");
      return undefined;
    }
    const got = received(event, Date.now() - this.start);
    this.seen.push(got);
    return got;
  }

  fail(headline: string, details: string[] = []): ExpectationFailed {
    const lines = [`${this.name()}: ${headline}`, ...details];
    lines.push(`arrived within ${this.within} ms (${this.seen.length} events):`);
    if (this.seen.length === 0) lines.push("  (nothing)");
    for (const got of this.seen) lines.push(`  +${got.at} ms  ${describe(got)}`);
    return new ExpectationFailed(lines.join("\n"));
  }

  private name(): string {
    const source = this.subscription.source;
    const feed = source?.case === "table" ? `table ${source.value.table}` : source?.case === "topic" ? `topic ${source.value.topic}` : "?";
    return `subscription ${this.subscription.id} (${feed})`;
  }
}

/**
 * Waits at most `within` ms for the subscription's next event and asserts that it is the
 * `spec`'s (a kind: "INSERT", "UPDATE", "DELETE", "INITIAL", "MESSAGE", "READY", "STATUS";
 * `where`: fields of the new row, a delete's old row or a message's JSON payload; `old`: of the
 * old row; `key`; `payload`), each value deeply equal or accepted by a function. Resolves to
 * the event.
 */
export async function expect(subscription: Subscription, spec: SpecLike, options: ExpectOptions = {}): Promise<Received> {
  const want = toSpec(spec);
  const watch = new Watch(subscription, options.within ?? DEFAULT_WITHIN_MS);
  for (;;) {
    const got = await watch.next();
    if (got === undefined) {
      const data = watch.seen.filter((each) => wanted(want, each));
      const none = data.length === 0 ? "nothing arrived" : `none of the ${data.length} events matched`;
      throw watch.fail(`expected ${describeSpec(want)}: ${none}`, closest(want, data));
    }
    if (!wanted(want, got)) continue;
    const wrong = mismatches(want, got);
    if (wrong.length === 0) return got;
    if (!options.skip) {
      throw watch.fail(
        `expected ${describeSpec(want)}, but the next event was ${describe(got)}`,
        wrong.map((line) => `  ${line}`),
      );
    }
  }
}

/** The differences of the arrived event that came nearest to `want`. */
function closest(want: Spec, candidates: Received[]): string[] {
  let best: Received | undefined;
  let fewest = Infinity;
  for (const got of candidates) {
    const count = mismatches(want, got).length;
    if (count < fewest) [best, fewest] = [got, count];
  }
  if (best === undefined) return [];
  return [`closest: ${describe(best)}`, ...mismatches(want, best).map((line) => `  ${line}`)];
}

/**
 * Asserts that the subscription's next events are `events`, in this order, all within
 * `within` ms; without `skip` nothing else may come in between. Each is a `Spec`, a kind, or
 * a `[kind, where]` pair. Resolves to the matched events.
 */
export async function expectSequence(
  subscription: Subscription,
  events: SpecLike[],
  options: ExpectOptions = {},
): Promise<Received[]> {
  const wants = events.map(toSpec);
  const watch = new Watch(subscription, options.within ?? DEFAULT_WITHIN_MS);
  const matched: Received[] = [];
  while (matched.length < wants.length) {
    const want = wants[matched.length]!;
    const got = await watch.next();
    if (got === undefined) {
      throw watch.fail(
        `expected ${wants.length} events in order, ${matched.length} arrived`,
        sequenceTable(wants, matched, undefined),
      );
    }
    if (!wanted(want, got)) continue;
    if (mismatches(want, got).length === 0) matched.push(got);
    else if (!options.skip) {
      throw watch.fail(
        `expected ${wants.length} events in order; event ${matched.length + 1} differs`,
        sequenceTable(wants, matched, got),
      );
    }
  }
  return matched;
}

function sequenceTable(wants: Spec[], matched: Received[], wrong: Received | undefined): string[] {
  const lines: string[] = [];
  wants.forEach((want, i) => {
    const n = i + 1;
    if (i < matched.length) {
      lines.push(`  ${n}. ok  ${describeSpec(want)}`, `         got ${describe(matched[i]!)}`);
    } else if (i === matched.length) {
      lines.push(`  ${n}. NO  ${describeSpec(want)}`);
      if (wrong === undefined) lines.push("         got nothing");
      else {
        lines.push(`         got ${describe(wrong)}`);
        lines.push(...mismatches(want, wrong).map((line) => `           ${line}`));
      }
    } else lines.push(`  ${n}. --  ${describeSpec(want)}`);
  });
  return lines;
}

export interface NothingOptions {
  /** How long nothing may arrive, in milliseconds. */
  for: number;
  /** Only events matching this count (default: any data event). */
  matching?: SpecLike;
}

/**
 * Asserts that no data event (or none `matching`) arrives for `for` ms. At the end it makes a
 * round trip to the server (a ping), so every event the server sent before then has arrived
 * and is judged too. Resolves to the events it read and let pass.
 */
export async function expectNothing(subscription: Subscription, options: NothingOptions): Promise<Received[]> {
  const want = toSpec(options.matching ?? {});
  const watch = new Watch(subscription, options.for);
  const judge = (got: Received) => {
    if (wanted(want, got) && mismatches(want, got).length === 0) {
      throw watch.fail(`expected no ${describeSpec(want)}, but ${describe(got)} arrived`);
    }
  };
  for (let got = await watch.next(); got !== undefined; got = await watch.next()) judge(got);
  await subscription.barrier();
  for (let got = await watch.next(false); got !== undefined; got = await watch.next(false)) judge(got);
  return watch.seen;
}

export type { Check, Received, Spec, SpecLike };
