/**
 * A table as a live grid: a `MaterializedView` (snapshot, then changes) drawn as a virtualised
 * grid (only the rows in sight are in the DOM, so 10,000 rows scroll as smoothly as ten), with
 * a filter builder, a column chooser and a squash interval (each reopens the view with the
 * server doing the work), and the rows that were just inserted, updated or deleted marked.
 */

import {
  type Client,
  col,
  type Filter,
  type JsValue,
  type Key,
  MaterializedView,
  numeric,
  type pb,
  ValueKind,
  type ViewChange,
} from "../../../src/index.js";
import { count, el, frameThrottle } from "./dom.js";

/** Height of one grid row in pixels (the CSS's `--row-height`). */
const ROW_HEIGHT = 28;
/** Rows drawn beyond each edge of the visible part, so a quick scroll shows no gap. */
const OVERSCAN = 10;
/** How long an inserted, updated or deleted row stays marked (deleted ones stay visible). */
const MARK_MS = 3_000;

type Mark = "insert" | "update" | "delete";

/** One condition of the filter builder. */
interface Condition {
  column: string;
  op: "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "startsWith" | "isNull" | "isNotNull";
  value: string;
}

const OPS: [Condition["op"], string][] = [
  ["eq", "="],
  ["ne", "≠"],
  ["lt", "<"],
  ["le", "≤"],
  ["gt", ">"],
  ["ge", "≥"],
  ["startsWith", "starts with"],
  ["isNull", "is null"],
  ["isNotNull", "is not null"],
];

export class TableGrid {
  readonly #client: Client;
  readonly #table: string;
  readonly #info: pb.CatalogTable | undefined;
  #view: MaterializedView | undefined;
  #conditions: Condition[] = [];
  /** Columns asked for (empty: all). */
  #columns: string[] = [];
  #squashMs = 0;
  /** Rows in key order, recomputed when rows come or go. */
  #order: Key[] = [];
  #orderStale = true;
  /** Recent changes by key: what and when, and (deletes) the row as it was. */
  #marks = new Map<Key, { mark: Mark; at: number; row?: Record<string, JsValue>; changed?: Set<string> }>();
  #counts = { snapshot: 0, insert: 0, update: 0, delete: 0 };
  #ready = false;
  #closed = false;
  #sweeper: ReturnType<typeof setInterval>;
  readonly #schedule: () => void;
  // The panel's parts.
  readonly #status: HTMLElement;
  readonly #counters: HTMLElement;
  readonly #head: HTMLElement;
  readonly #scroller: HTMLElement;
  readonly #spacer: HTMLElement;
  readonly #body: HTMLElement;
  readonly #filterList: HTMLElement;
  readonly #columnBox: HTMLElement;

  constructor(client: Client, main: HTMLElement, table: string, info: pb.CatalogTable | undefined) {
    this.#client = client;
    this.#table = table;
    this.#info = info;
    this.#schedule = frameThrottle(() => this.#render());
    this.#status = el("span", { class: "snapshot", role: "status", "aria-live": "polite", text: "subscribing" });
    this.#counters = el("span", { class: "counters" });
    this.#head = el("div", { class: "grid-head", role: "row" });
    this.#spacer = el("div", { class: "grid-spacer" });
    this.#body = el("div", { class: "grid-rows", role: "rowgroup" });
    this.#scroller = el("div", { class: "grid-scroll", tabindex: 0, "aria-label": `rows of ${table}` }, this.#spacer, this.#body);
    this.#scroller.addEventListener("scroll", this.#schedule);
    this.#scroller.addEventListener("keydown", (event) => this.#scrollKeys(event));
    this.#filterList = el("div", { class: "conditions" });
    this.#columnBox = el("fieldset", { class: "columns" }, el("legend", { text: "Columns" }));
    const squash = el("input", { id: "squash", type: "number", min: 0, max: 60000, step: 100, value: 0 });
    const controls = el("details", { class: "controls" },
      el("summary", { text: "Filter, columns, squash" }),
      el("div", { class: "filter" }, el("strong", { text: "Rows where all of" }), this.#filterList,
        this.#button("Add condition", () => this.#addCondition())),
      this.#columnBox,
      el("label", { for: "squash" }, "Squash (ms per row) ", squash),
      this.#button("Apply", () => {
        this.#squashMs = Number(squash.value) || 0;
        this.#readControls();
        void this.#open();
      }, "apply"));
    main.replaceChildren(
      el("section", { class: "panel table-panel", "aria-label": `table ${table}` },
        el("div", { class: "panel-title" }, el("h2", { text: table }), this.#status, this.#counters),
        controls,
        el("div", { class: "grid", role: "table", "aria-label": table }, this.#head, this.#scroller)),
    );
    this.#fillColumnChooser();
    this.#sweeper = setInterval(() => this.#sweep(), 500);
    new ResizeObserver(this.#schedule).observe(this.#scroller);
    void this.#open();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweeper);
    await this.#view?.close();
  }

  #button(label: string, onClick: () => void, className = ""): HTMLButtonElement {
    const button = el("button", { type: "button", class: className, text: label });
    button.addEventListener("click", onClick);
    return button;
  }

  /** (Re)opens the view with the current filter, columns and squash interval. */
  async #open(): Promise<void> {
    const old = this.#view;
    this.#view = undefined;
    await old?.close();
    this.#marks.clear();
    this.#counts = { snapshot: 0, insert: 0, update: 0, delete: 0 };
    this.#ready = false;
    this.#orderStale = true;
    this.#status.textContent = "loading snapshot";
    this.#status.dataset.ready = "false";
    let view: MaterializedView;
    try {
      view = await this.#client.materializedView(this.#table, {
        filter: this.#filter(),
        columns: this.#columns.length > 0 ? this.#columns : undefined,
        minIntervalMs: this.#squashMs,
        onChange: (kind, key, row, change) => this.#changed(view, kind, key, row, change),
        onReset: () => {
          this.#orderStale = true;
          this.#schedule();
        },
      });
    } catch (error) {
      this.#status.textContent = `error: ${(error as Error).message}`;
      return;
    }
    if (this.#closed) {
      await view.close();
      return;
    }
    this.#view = view;
    view.waitReady().then(
      () => {
        if (this.#view !== view) return;
        this.#ready = true;
        this.#status.textContent = "Ready";
        this.#status.dataset.ready = "true";
        this.#orderStale = true;
        this.#schedule();
      },
      (error: Error) => {
        if (this.#view === view) this.#status.textContent = `ended: ${error.message}`;
      },
    );
  }

  #changed(view: MaterializedView, kind: string, key: Key, row: Record<string, JsValue> | undefined, change: ViewChange): void {
    if (this.#view !== undefined && this.#view !== view) return;
    if (kind === "initial") {
      this.#counts.snapshot++;
      if (this.#counts.snapshot % 500 === 0) this.#status.textContent = `loading snapshot: ${count(this.#counts.snapshot)} rows`;
      return;
    }
    const mark = kind as Mark;
    this.#counts[mark]++;
    const changed = new Set<string>();
    if (mark === "update" && row !== undefined && change.oldRow !== undefined) {
      for (const [name, value] of Object.entries(row)) {
        if (show(value) !== show(change.oldRow[name])) changed.add(name);
      }
    }
    this.#marks.set(key, { mark, at: performance.now(), row: mark === "delete" ? change.oldRow ?? { ...keyRow(key, this.#keyColumns()) } : undefined, changed });
    if (mark !== "update") this.#orderStale = true;
    this.#schedule();
  }

  /** Drops marks older than `MARK_MS` (and deleted rows with them). */
  #sweep(): void {
    const now = performance.now();
    let dropped = false;
    for (const [key, mark] of this.#marks) {
      if (now - mark.at < MARK_MS) continue;
      this.#marks.delete(key);
      dropped = true;
      if (mark.mark === "delete") this.#orderStale = true;
    }
    if (dropped) this.#schedule();
  }

  #keyColumns(): string[] {
    return this.#info?.primaryKey ?? [];
  }

  /** Every column shown: the chosen ones (all when none chosen), key columns first. */
  #shownColumns(): string[] {
    const all = this.#info?.columns.map((c) => c.name) ?? this.#guessColumns();
    const chosen = this.#columns.length > 0 ? all.filter((c) => this.#columns.includes(c) || this.#keyColumns().includes(c)) : all;
    const keys = this.#keyColumns().filter((c) => chosen.includes(c));
    return [...keys, ...chosen.filter((c) => !keys.includes(c))];
  }

  /** Columns seen in the rows, for a table the catalog does not describe. */
  #guessColumns(): string[] {
    const first = this.#view?.rows.values().next().value;
    return first === undefined ? [] : Object.keys(first);
  }

  #render(): void {
    const view = this.#view;
    if (view === undefined) return;
    const columns = this.#shownColumns();
    if (this.#orderStale) {
      const keys = [...view.rows.keys()];
      for (const [key, mark] of this.#marks) if (mark.mark === "delete" && !view.rows.has(key)) keys.push(key);
      keys.sort(compareKeys);
      this.#order = keys;
      this.#orderStale = false;
    }
    const template = `repeat(${Math.max(columns.length, 1)}, minmax(8rem, 1fr))`;
    this.#head.style.gridTemplateColumns = template;
    const headNames = columns.join("\u0000");
    if (this.#head.dataset.columns !== headNames) {
      this.#head.dataset.columns = headNames;
      this.#head.replaceChildren(...columns.map((name) => {
        const type = this.#info?.columns.find((c) => c.name === name)?.type;
        return el("div", { class: "cell", role: "columnheader", title: type }, name,
          this.#keyColumns().includes(name) ? el("span", { class: "key", text: "key", title: "primary key" }) : undefined);
      }));
    }
    this.#spacer.style.height = `${this.#order.length * ROW_HEIGHT}px`;
    const top = this.#scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(this.#order.length, Math.ceil((top + this.#scroller.clientHeight) / ROW_HEIGHT) + OVERSCAN);
    const rows: HTMLElement[] = [];
    for (let index = first; index < last; index++) {
      const key = this.#order[index]!;
      const mark = this.#marks.get(key);
      const row = view.rows.get(key) ?? mark?.row;
      if (row === undefined) continue;
      const line = el("div", {
        class: `row${mark ? ` ${mark.mark}` : ""}`,
        role: "row",
        "data-key": String(key),
        "aria-label": mark ? `${mark.mark}d` : undefined,
      });
      line.style.gridTemplateColumns = template;
      line.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
      for (const name of columns) {
        const cell = el("div", { class: mark?.changed?.has(name) ? "cell changed" : "cell", role: "cell" });
        cell.textContent = show(row[name]);
        line.append(cell);
      }
      rows.push(line);
    }
    this.#body.replaceChildren(...rows);
    const marks = [...this.#marks.values()];
    this.#counters.textContent =
      `${count(view.rows.size)} rows` +
      (this.#ready ? "" : ` · ${count(this.#counts.snapshot)} in snapshot so far`) +
      ` · ${count(this.#counts.insert)} inserted · ${count(this.#counts.update)} updated · ${count(this.#counts.delete)} deleted` +
      (marks.length > 0 ? ` · ${marks.length} marked` : "");
    this.#counters.dataset.rows = String(view.rows.size);
  }

  #scrollKeys(event: KeyboardEvent): void {
    const page = this.#scroller.clientHeight - ROW_HEIGHT;
    const moves: Record<string, number> = { ArrowDown: ROW_HEIGHT, ArrowUp: -ROW_HEIGHT, PageDown: page, PageUp: -page };
    if (event.key === "Home") this.#scroller.scrollTop = 0;
    else if (event.key === "End") this.#scroller.scrollTop = this.#scroller.scrollHeight;
    else if (moves[event.key] !== undefined) this.#scroller.scrollTop += moves[event.key]!;
    else return;
    event.preventDefault();
  }

  // ---- controls ----------------------------------------------------------------------------

  #fillColumnChooser(): void {
    for (const column of this.#info?.columns ?? []) {
      const key = this.#keyColumns().includes(column.name);
      const box = el("input", { type: "checkbox", name: "column", value: column.name, checked: true, disabled: key });
      this.#columnBox.append(el("label", { title: column.type }, box, ` ${column.name}`));
    }
  }

  #addCondition(condition: Condition = { column: this.#info?.columns[0]?.name ?? "", op: "eq", value: "" }): void {
    const names = this.#info?.columns.map((c) => c.name) ?? [];
    const column = el("select", { "aria-label": "column", class: "cond-column" },
      ...names.map((name) => el("option", { value: name, text: name, selected: name === condition.column })));
    const op = el("select", { "aria-label": "comparison", class: "cond-op" },
      ...OPS.map(([value, label]) => el("option", { value, text: label, selected: value === condition.op })));
    const value = el("input", { "aria-label": "value", class: "cond-value", value: condition.value });
    const row = el("div", { class: "condition" }, column, op, value);
    row.append(this.#button("Remove", () => row.remove(), "remove"));
    this.#filterList.append(row);
    column.focus();
  }

  #readControls(): void {
    this.#conditions = Array.from(this.#filterList.querySelectorAll(".condition")).map((row) => ({
      column: row.querySelector<HTMLSelectElement>(".cond-column")!.value,
      op: row.querySelector<HTMLSelectElement>(".cond-op")!.value as Condition["op"],
      value: row.querySelector<HTMLInputElement>(".cond-value")!.value,
    }));
    const boxes = Array.from(this.#columnBox.querySelectorAll<HTMLInputElement>("input[name=column]"));
    const chosen = boxes.filter((box) => box.checked || box.disabled).map((box) => box.value);
    this.#columns = chosen.length === boxes.length ? [] : chosen;
  }

  /** The builder's conditions as one filter (undefined: none). */
  #filter(): Filter | undefined {
    const filters = this.#conditions.map((c) => {
      const operand = col(c.column);
      if (c.op === "isNull") return operand.isNull();
      if (c.op === "isNotNull") return operand.isNotNull();
      if (c.op === "startsWith") return operand.startsWith(c.value);
      const kind = this.#info?.columns.find((column) => column.name === c.column)?.kind;
      return operand[c.op](typed(c.value, kind));
    });
    const [first, ...rest] = filters;
    return first === undefined ? undefined : first.and(...rest);
  }
}

/** A filter value typed as the column's values arrive. */
function typed(text: string, kind: ValueKind | undefined): boolean | number | bigint | string | Date | ReturnType<typeof numeric> {
  switch (kind) {
    case ValueKind.INT:
      return /^-?\d+$/.test(text.trim()) ? BigInt(text.trim()) : text;
    case ValueKind.DOUBLE:
      return Number(text);
    case ValueKind.NUMERIC:
      return numeric(text.trim());
    case ValueKind.BOOL:
      return text.trim().toLowerCase() === "true";
    case ValueKind.TIMESTAMP_MICROS:
      return new Date(text);
    default:
      return text;
  }
}

/** A value as a cell shows it. */
export function show(value: JsValue | undefined): string {
  if (value === null || value === undefined) return "∅";
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Uint8Array) return `\\x${[...value].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A key's columns, for a deleted row whose old row the server did not send. */
function keyRow(key: Key, columns: string[]): Record<string, JsValue> {
  if (columns.length === 1) return { [columns[0]!]: key as JsValue };
  return {};
}

/** Primary keys in a stable order: numbers by value, the rest by their text. */
function compareKeys(a: Key, b: Key): number {
  if ((typeof a === "number" || typeof a === "bigint") && (typeof b === "number" || typeof b === "bigint")) {
    return a < b ? -1 : a > b ? 1 : 0;
  }
  const [x, y] = [String(a), String(b)];
  return x < y ? -1 : x > y ? 1 : 0;
}
