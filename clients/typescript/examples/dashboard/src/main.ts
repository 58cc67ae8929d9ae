/**
 * The feedgate dashboard: connects to the server that serves it (`/v1/ws`) with the TypeScript
 * client, lists what the catalog says this connection may subscribe to, and opens a table as a
 * live grid (`grid.ts`) or a topic as a live tail (`tail.ts`); `stats.ts` charts `/v1/stats`.
 * The opened item is kept in the URL's hash (`#table=public.items`, `#topic=demo.prices`) so a
 * reload or a link reopens it. Built with esbuild into `ui/` (see `build.mjs`).
 */

import { Client, type ConnectionState, ErrorCode, FeedgateError, TopicBackend, type pb } from "../../../src/index.js";
import { arrowKeys, byId, el } from "./dom.js";
import { TableGrid } from "./grid.js";
import { ServerPanel } from "./stats.js";
import { TopicTail } from "./tail.js";

/** Wait between attempts when the first connection fails (later drops are the client's). */
const RETRY_MS = 2_000;
/** How often the catalog is read again (new watched tables, topics with kept messages). */
const CATALOG_REFRESH_MS = 5_000;
const TOKEN_KEY = "feedgate.token";

/** What is open in the main panel. */
interface Panel {
  close(): Promise<void>;
}

class Dashboard {
  #client: Client | undefined;
  #catalog: pb.Catalog | undefined;
  #panel: Panel | undefined;
  #opened = "";
  #generation = 0;

  constructor() {
    const token = byId<HTMLInputElement>("token");
    token.value = sessionStorage.getItem(TOKEN_KEY) ?? "";
    byId("login").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, token.value);
      void this.connect();
    });
    byId("open-topic").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = byId<HTMLInputElement>("topic-name").value.trim();
      if (name !== "") location.hash = `topic=${encodeURIComponent(name)}`;
    });
    arrowKeys(byId("tables"));
    arrowKeys(byId("topics"));
    document.addEventListener("keydown", (event) => {
      const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement;
      if (event.key === "/" && !typing) {
        event.preventDefault();
        byId("catalog").querySelector<HTMLElement>("button")?.focus();
      }
    });
    window.addEventListener("hashchange", () => void this.openFromHash());
    new ServerPanel(byId("charts")).start();
    setInterval(() => void this.refreshCatalog(), CATALOG_REFRESH_MS);
  }

  /** Connects (again, after a token change), retrying until the server answers. */
  async connect(): Promise<void> {
    const generation = ++this.#generation;
    await this.#panel?.close();
    this.#panel = undefined;
    this.#opened = "";
    await this.#client?.close();
    this.#client = undefined;
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;
    for (;;) {
      this.showState("connecting", undefined);
      try {
        const client = await Client.connect(url, {
          clientName: "dashboard",
          token: () => byId<HTMLInputElement>("token").value,
          // Called from within connect() too, so it must not name the client being made.
          onStateChange: (state, error) => {
            if (generation === this.#generation) this.showState(state, error);
          },
        });
        if (generation !== this.#generation) {
          await client.close();
          return;
        }
        this.#client = client;
        this.showState(client.state, undefined);
        byId("server-version").textContent = `server ${client.welcome?.serverVersion ?? ""}`;
        await this.refreshCatalog();
        await this.openFromHash();
        return;
      } catch (error) {
        if (generation !== this.#generation) return;
        this.showState("closed", error as FeedgateError);
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
        if (generation !== this.#generation) return;
      }
    }
  }

  showState(state: ConnectionState, error: FeedgateError | undefined): void {
    const badge = byId("state");
    badge.dataset.state = state;
    badge.textContent = error === undefined ? state : `${state}: ${error.message}`;
  }

  async refreshCatalog(): Promise<void> {
    const client = this.#client;
    if (client === undefined || client.state !== "open") return;
    try {
      this.#catalog = await client.catalog();
    } catch (error) {
      const unauthenticated = error instanceof FeedgateError && error.code === ErrorCode.UNAUTHENTICATED;
      byId("tables-note").textContent = unauthenticated
        ? "This server needs a token: enter it above and press Connect."
        : `catalog: ${(error as Error).message}`;
      if (unauthenticated) byId("token").focus();
      return;
    }
    this.renderCatalog(this.#catalog);
  }

  renderCatalog(catalog: pb.Catalog): void {
    const note = byId("tables-note");
    note.textContent = !catalog.database
      ? "No database configured (start with --database-url)."
      : catalog.tablesError !== undefined
        ? `Tables unavailable: ${catalog.tablesError.message}`
        : catalog.tables.length === 0
          ? "No watched table you may read."
          : "";
    const item = (kind: "table" | "topic", name: string, detail: string) => {
      const target = `${kind}=${encodeURIComponent(name)}`;
      const button = el("button", {
        type: "button",
        "data-open": target,
        "aria-current": this.#opened === target ? "true" : undefined,
      }, el("span", { text: name }), el("small", { text: detail }));
      button.addEventListener("click", () => (location.hash = target));
      return el("li", {}, button);
    };
    replaceKeepingFocus(byId("tables"), catalog.tables.map((table) =>
      item("table", table.table, `${table.columns.length} columns${table.rowFiltered ? " · filtered" : ""}`)));
    const known = catalog.topics.flatMap((route) => route.knownTopics.map((topic) => ({ topic, route })));
    replaceKeepingFocus(byId("topics"), known.map(({ topic, route }) => item("topic", topic, backendName(route.backend))));
    byId("routes").replaceChildren(...catalog.topics.map((route) =>
      el("li", {
        text: `${route.pattern} → ${backendName(route.backend)}` +
          `${route.history ? ", history" : ""}${route.resume ? ", resume" : ""}` +
          `${route.publish ? ", publish" : ""}${route.subscribeAll ? "" : ", some topics"}`,
      })));
  }

  async openFromHash(): Promise<void> {
    const client = this.#client;
    const raw = location.hash.slice(1);
    if (client === undefined || raw === this.#opened) return;
    const hash = decodeURIComponent(raw);
    await this.#panel?.close();
    this.#panel = undefined;
    this.#opened = raw;
    for (const button of Array.from(document.querySelectorAll<HTMLElement>("[data-open]"))) {
      if (button.dataset.open === this.#opened) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    const main = byId("main");
    const [kind, name] = [hash.slice(0, hash.indexOf("=")), hash.slice(hash.indexOf("=") + 1)];
    if (kind === "table") {
      const table = this.#catalog?.tables.find((t) => t.table === name);
      this.#panel = new TableGrid(client, main, name, table);
    } else if (kind === "topic") {
      const route = this.#catalog?.topics.find((r) => matches(r.pattern, name));
      this.#panel = new TopicTail(client, main, name, route);
    }
  }
}

/** Replaces a list's items, keeping the focus on the item it was on (by its target). */
function replaceKeepingFocus(list: HTMLElement, items: HTMLElement[]): void {
  const focused = (document.activeElement as HTMLElement | null)?.dataset?.open;
  list.replaceChildren(...items);
  if (focused !== undefined) list.querySelector<HTMLElement>(`[data-open="${CSS.escape(focused)}"]`)?.focus();
}

function backendName(backend: TopicBackend): string {
  switch (backend) {
    case TopicBackend.MEMORY:
      return "in-process";
    case TopicBackend.KAFKA:
      return "Kafka";
    case TopicBackend.RABBITMQ:
      return "RabbitMQ";
    default:
      return "unknown";
  }
}

/** Whether a routing pattern (`*` one segment, `#` any number) matches a topic name. */
export function matches(pattern: string, topic: string): boolean {
  const match = (p: string[], t: string[]): boolean => {
    if (p.length === 0) return t.length === 0;
    const [head, ...rest] = p;
    if (head === "#") return [...Array(t.length + 1).keys()].some((skip) => match(rest, t.slice(skip)));
    return t.length > 0 && (head === "*" || head === t[0]) && match(rest, t.slice(1));
  };
  return match(pattern.split("."), topic.split("."));
}

void new Dashboard().connect();
