/**
 * A live materialized view of one table: a `Map` keyed by primary key, kept current from the
 * table's INITIAL / INSERT / UPDATE / DELETE events.
 *
 * The view subscribes with `includeInitial`. A snapshot (the first, and every rebuild) fills a
 * map of its own; at its `Ready` the view's `rows` take its contents in one step, so `rows` is
 * only ever empty (before the first `Ready`) or a complete state of the table, never a partial
 * or mixed one. Then changes are applied as they arrive (no queue of its own); a squashed batch
 * (`minIntervalMs`) arrives whole and is applied in one step, `onChange` called for its changes
 * once all of them are in `rows`. Reconnects are the client's business: the subscription resumes
 * and the rows stay. When the subscription cannot continue (`RESUME_UNAVAILABLE`: cut before it
 * had a position, or too far behind; `SOURCE_RESET`: the table was truncated) the view rebuilds
 * from a fresh snapshot while the old rows stay readable, swaps at the new `Ready` and calls
 * `onReset` once. Any other end of the subscription is kept in `error`, and `waitReady()`
 * rejects with it.
 */

import { ChangeKind, type Event as FeedEvent, type Row, type RowChange } from "./gen/feedgate/v1/feedgate_pb.js";
import { ErrorCode, FeedgateError } from "./errors.js";
import type { Filter } from "./filters.js";
import { type JsValue, type Key, keyOf, rowToObject } from "./values.js";
import type { Client } from "./client.js";
import type { Subscription } from "./subscription.js";

export type ChangeKindName = "initial" | "insert" | "update" | "delete";

/** What one change event carried, as the view applied it. */
export interface ViewChange {
  kind: ChangeKindName;
  /** The row's primary key (see `keyOf`). */
  key: Key;
  /** The row after the change; undefined for a delete. */
  row: Record<string, JsValue> | undefined;
  /** The row before the change (updates and deletes); undefined otherwise. */
  oldRow: Record<string, JsValue> | undefined;
  /** When the writing transaction ran (its `now()`); undefined for initial rows. */
  commitTime: Date | undefined;
  /** The exact commit time, microseconds since the Unix epoch (0 for initial rows). */
  commitTimeMicros: bigint;
  /** The writing transaction's id (`xid8`); changes with the same id were one transaction. */
  transactionId: bigint;
  /** The event's cursor (resume a subscription after it; of a squashed batch, only the last
   * change's, the one without `more`). */
  cursor: Uint8Array;
  /** More changes of the same squashed batch follow (`Event.more`). A batch is applied as a
   * whole before `onChange` is called for each of its changes. */
  more: boolean;
}

/** Called after every change the view applies (a squashed batch's once all of it is applied);
 * `row` is undefined for a delete, and `change` holds the rest of what the event carried. The
 * first snapshot's rows are reported as they arrive (kind "initial"; `rows` shows them from
 * `Ready` on); a rebuild's are not: `onReset` says `rows` was replaced. */
export type ChangeCallback = (
  kind: ChangeKindName,
  key: Key,
  row: Record<string, JsValue> | undefined,
  change: ViewChange,
) => void;

/** Called once per rebuild, right after `rows` took the new snapshot's contents, with why the
 * view had to rebuild (`RESUME_UNAVAILABLE` or `SOURCE_RESET`). Recompute anything derived
 * from `rows` here. */
export type ResetCallback = (reason: FeedgateError) => void;

export interface ViewOptions {
  onChange?: ChangeCallback;
  onReset?: ResetCallback;
  /** Hold only the rows this filter matches (`col(...)` builders). */
  filter?: Filter;
  /** Hold only these columns (and the primary key's). */
  columns?: string[];
  /** Squash: apply at most one change per row per this many milliseconds (1 to 60,000; default
   * 0: every change), a row's changes within the interval collapsed into one. */
  minIntervalMs?: number;
}

const KINDS: Partial<Record<ChangeKind, ChangeKindName>> = {
  [ChangeKind.INITIAL]: "initial",
  [ChangeKind.INSERT]: "insert",
  [ChangeKind.UPDATE]: "update",
  [ChangeKind.DELETE]: "delete",
};

/** Ends of the view's subscription after which a fresh snapshot restores it. */
const REBUILD_AFTER: ReadonlySet<ErrorCode> = new Set([ErrorCode.RESUME_UNAVAILABLE, ErrorCode.SOURCE_RESET]);

/** One subscription of the view: its snapshot fills `staging` until its `Ready`. */
interface Feed {
  staging: Map<Key, Record<string, JsValue>>;
  live: boolean;
}

export class MaterializedView {
  readonly table: string;
  /** The table's rows by primary key (see `keyOf`); read it, don't write it. The same `Map`
   * for the view's whole life. */
  readonly rows = new Map<Key, Record<string, JsValue>>();
  /** Why the view stopped following the table; undefined while it follows. */
  error: FeedgateError | undefined;
  /** Number of rebuilds completed (each one called `onReset`). */
  resets = 0;
  /** True while `rows` is the complete, live state of the table; false before the first
   * snapshot completed and during a rebuild (when `rows` still holds the old state). */
  isReady = false;

  private readonly client: Client;
  private readonly onChange: ChangeCallback | undefined;
  private readonly onReset: ResetCallback | undefined;
  private readonly filter: Filter | undefined;
  private readonly columns: string[] | undefined;
  private readonly minIntervalMs: number | undefined;
  /** The `onChange` calls of the batch being applied, made at its last change. */
  private notices: Parameters<ChangeCallback>[] = [];
  private subscription: Subscription | undefined;
  private waiters: { resolve: () => void; reject: (error: FeedgateError) => void }[] = [];
  private stopped = false;
  /** Why the snapshot being filled is a rebuild; undefined for the first one. */
  private rebuilding: FeedgateError | undefined;
  /** Called each time `rows` changed or the view failed (see `watch`). */
  private readonly watchers = new Set<() => void>();

  /** @internal Use `client.materializedView(table)`. */
  constructor(client: Client, table: string, options: ViewOptions) {
    this.client = client;
    this.table = table;
    this.onChange = options.onChange;
    this.onReset = options.onReset;
    this.filter = options.filter;
    this.columns = options.columns;
    this.minIntervalMs = options.minIntervalMs;
  }

  /** @internal Subscribes (with a snapshot); rejects if the server refuses. */
  async start(): Promise<void> {
    const feed: Feed = { staging: new Map(), live: false };
    const subscription = await this.client.subscribeTable(this.table, {
      includeInitial: true,
      filter: this.filter,
      columns: this.columns,
      minIntervalMs: this.minIntervalMs,
      onEvent: (event) => this.apply(feed, event),
    });
    if (this.stopped) {
      await subscription.unsubscribe();
      return;
    }
    this.subscription = subscription;
    void subscription.closed.then((error) => this.ended(error));
  }

  get size(): number {
    return this.rows.size;
  }

  get(key: Key): Record<string, JsValue> | undefined {
    return this.rows.get(key);
  }

  /** Resolves when the view holds the table's complete state; rejects with the view's error
   * if its subscription ended instead. */
  waitReady(): Promise<void> {
    if (this.error !== undefined) return Promise.reject(this.error);
    if (this.isReady) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** @internal Calls `listener` each time `rows` changed (a change, a batch, a snapshot) or the
   * view failed; returns the function that stops it. What the test helpers' `waitUntil` waits
   * on instead of polling. */
  watch(listener: () => void): () => void {
    this.watchers.add(listener);
    return () => this.watchers.delete(listener);
  }

  private touch(): void {
    for (const listener of [...this.watchers]) listener();
  }

  /** Stops following the table (unsubscribes); `rows` keeps its last state. */
  async close(): Promise<void> {
    this.stopped = true;
    await this.subscription?.unsubscribe();
  }

  private apply(feed: Feed, event: FeedEvent): void {
    if (event.body.case === "ready") {
      if (!feed.live) this.swap(feed);
      return;
    }
    if (event.body.case !== "change") return;
    const change = event.body.value;
    const target = feed.live ? this.rows : feed.staging;
    const [key, row] = applyChange(target, change);
    if (feed.live && !event.more) this.touch();
    if (this.onChange === undefined || (!feed.live && this.rebuilding !== undefined)) return;
    const kind = KINDS[change.kind] ?? "update";
    const micros = change.commitTimeMicros;
    const details: ViewChange = {
      kind,
      key,
      row,
      oldRow: change.oldRow === undefined ? undefined : rowToObject(change.oldRow),
      commitTime: micros === 0n ? undefined : new Date(Number(micros / 1000n)),
      commitTimeMicros: micros,
      transactionId: change.transactionId,
      cursor: event.cursor,
      more: event.more,
    };
    this.notify(event.more, [kind, key, row, details]);
  }

  /** Calls `onChange` with `notice`, or, while its batch goes on (`more`), once the batch's
   * last change is applied too. */
  private notify(more: boolean, notice: Parameters<ChangeCallback>): void {
    this.notices.push(notice);
    if (more) return;
    const notices = this.notices;
    this.notices = [];
    for (const args of notices) this.onChange?.(...args);
  }

  /** A snapshot is complete: `rows` takes its contents at once, and the view is live. */
  private swap(feed: Feed): void {
    this.rows.clear();
    for (const [key, row] of feed.staging) this.rows.set(key, row);
    feed.staging.clear();
    feed.live = true;
    this.isReady = true;
    const reason = this.rebuilding;
    this.rebuilding = undefined;
    for (const waiter of this.waiters.splice(0)) waiter.resolve();
    if (reason !== undefined) {
      this.resets += 1;
      this.onReset?.(reason);
    }
    this.touch();
  }

  private ended(error: FeedgateError | undefined): void {
    if (this.stopped || error === undefined) return;
    if (!REBUILD_AFTER.has(error.code)) {
      this.fail(error);
      return;
    }
    this.isReady = false;
    this.rebuilding ??= error;
    void this.rebuild();
  }

  /** Subscribes again with a snapshot, retrying what the server or a reconnect says may work
   * later (SOURCE_UNAVAILABLE after a server restart, a connection that dropped meanwhile). */
  private async rebuild(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (this.stopped) return;
      try {
        await this.start();
        return;
      } catch (error) {
        const failure =
          error instanceof FeedgateError
            ? error
            : new FeedgateError(ErrorCode.UNSPECIFIED, `cannot rebuild the view: ${String(error)}`);
        if (!failure.retryable || this.client.state === "closed") {
          this.fail(failure);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, this.client.retryDelay(attempt, failure)));
      }
    }
  }

  private fail(error: FeedgateError): void {
    this.error = error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    this.touch();
  }
}

/** Applies one change to `rows`; returns its key and the row after it (undefined: deleted). */
function applyChange(
  rows: Map<Key, Record<string, JsValue>>,
  change: RowChange,
): [Key, Record<string, JsValue> | undefined] {
  const key = keyOf(change.key);
  if (change.kind === ChangeKind.DELETE) {
    rows.delete(key);
    return [key, undefined];
  }
  if (change.kind === ChangeKind.UPDATE && change.oldRow !== undefined) {
    // An update may change the primary key: drop the row under its old key.
    const oldKey: Row["columns"] = {};
    for (const name of Object.keys(change.key?.columns ?? {})) {
      const value = change.oldRow.columns[name];
      if (value !== undefined) oldKey[name] = value;
    }
    const previous = keyOf({ ...change.oldRow, columns: oldKey });
    if (previous !== key) rows.delete(previous);
  }
  const row = rowToObject(change.newRow);
  rows.set(key, row);
  return [key, row];
}
