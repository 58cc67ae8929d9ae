/**
 * A live materialized view of one table: a `Map` keyed by primary key, kept current from the
 * table's INITIAL / INSERT / UPDATE / DELETE events.
 *
 * The view subscribes with `includeInitial`, so it first fills from the snapshot; `isReady`
 * turns true (and `waitReady()` resolves) when the snapshot is complete and the view is live.
 * Events are applied as they arrive (no queue of its own). When the server resets the source
 * (`SOURCE_RESET`: the table was truncated) the view clears itself, is not ready, and subscribes
 * again to rebuild; any other end of the subscription is kept in `error`, and `waitReady()`
 * rejects with it.
 */

import { ChangeKind, type Event as FeedEvent, type Row } from "./gen/feedgate/v1/feedgate_pb.js";
import { ErrorCode, type FeedgateError } from "./errors.js";
import { type JsValue, type Key, keyOf, rowToObject } from "./values.js";
import type { Client, Subscription } from "./client.js";

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
  /** The event's cursor (resume a subscription after it). */
  cursor: Uint8Array;
}

/** Called after every change the view applies; `row` is undefined for a delete, and `change`
 * holds the rest of what the event carried. */
export type ChangeCallback = (
  kind: ChangeKindName,
  key: Key,
  row: Record<string, JsValue> | undefined,
  change: ViewChange,
) => void;

const KINDS: Partial<Record<ChangeKind, ChangeKindName>> = {
  [ChangeKind.INITIAL]: "initial",
  [ChangeKind.INSERT]: "insert",
  [ChangeKind.UPDATE]: "update",
  [ChangeKind.DELETE]: "delete",
};

export class MaterializedView {
  readonly table: string;
  /** The table's rows by primary key (see `keyOf`); read it, don't write it. */
  readonly rows = new Map<Key, Record<string, JsValue>>();
  /** Why the view stopped following the table; undefined while it follows. */
  error: FeedgateError | undefined;
  /** Number of times the view was rebuilt after a SOURCE_RESET. */
  resets = 0;
  /** True while the view holds the complete, live state of the table. */
  isReady = false;

  private readonly client: Client;
  private readonly onChange: ChangeCallback | undefined;
  private subscription: Subscription | undefined;
  private waiters: { resolve: () => void; reject: (error: FeedgateError) => void }[] = [];
  private stopped = false;

  /** @internal Use `client.materializedView(table)`. */
  constructor(client: Client, table: string, onChange: ChangeCallback | undefined) {
    this.client = client;
    this.table = table;
    this.onChange = onChange;
  }

  /** @internal */
  async start(): Promise<void> {
    const subscription = await this.client.subscribeTable(this.table, {
      includeInitial: true,
      onEvent: (event) => this.apply(event),
    });
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

  /** Stops following the table (unsubscribes); `rows` keeps its last state. */
  async close(): Promise<void> {
    this.stopped = true;
    await this.subscription?.unsubscribe();
  }

  private apply(event: FeedEvent): void {
    if (event.body.case === "ready") {
      this.isReady = true;
      for (const waiter of this.waiters.splice(0)) waiter.resolve();
      return;
    }
    if (event.body.case !== "change") return;
    const change = event.body.value;
    const key = keyOf(change.key);
    let row: Record<string, JsValue> | undefined;
    if (change.kind === ChangeKind.DELETE) {
      this.rows.delete(key);
    } else {
      if (change.kind === ChangeKind.UPDATE && change.oldRow !== undefined) {
        // An update may change the primary key: drop the row under its old key.
        const oldKey: Row["columns"] = {};
        for (const name of Object.keys(change.key?.columns ?? {})) {
          const value = change.oldRow.columns[name];
          if (value !== undefined) oldKey[name] = value;
        }
        const previous = keyOf({ ...change.oldRow, columns: oldKey });
        if (previous !== key) this.rows.delete(previous);
      }
      row = rowToObject(change.newRow);
      this.rows.set(key, row);
    }
    if (this.onChange === undefined) return;
    const kind = KINDS[change.kind] ?? "update";
    const micros = change.commitTimeMicros;
    this.onChange(kind, key, row, {
      kind,
      key,
      row,
      oldRow: change.oldRow === undefined ? undefined : rowToObject(change.oldRow),
      commitTime: micros === 0n ? undefined : new Date(Number(micros / 1000n)),
      commitTimeMicros: micros,
      transactionId: change.transactionId,
      cursor: event.cursor,
    });
  }

  private ended(error: FeedgateError | undefined): void {
    if (this.stopped || error === undefined) return;
    if (error.code === ErrorCode.SOURCE_RESET) {
      this.isReady = false;
      this.rows.clear();
      this.resets += 1;
      this.start().catch((failure: FeedgateError) => this.fail(failure));
      return;
    }
    this.fail(error);
  }

  private fail(error: FeedgateError): void {
    this.error = error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }
}
