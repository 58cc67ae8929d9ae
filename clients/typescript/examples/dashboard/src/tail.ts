/**
 * A topic as a live tail: every message counted exactly as it arrives, the newest ones kept
 * (`KEEP`) and drawn at most every `RENDER_MS` (a topic at 1,000 messages a second costs a few
 * renders a second, not a thousand), payloads shown as indented JSON when they are JSON, as text
 * when they are UTF-8, else as hex; and a box to publish to it when the catalog says the
 * connection may.
 */

import { type Client, type Event, type pb, type Subscription } from "../../../src/index.js";
import { count, el } from "./dom.js";

/** Messages kept for display (older ones are counted, not shown). */
const KEEP = 200;
/** Least time between two renders. */
const RENDER_MS = 200;

interface Shown {
  offset: bigint;
  partition: number;
  key: string;
  at: Date;
  payload: Uint8Array;
}

export class TopicTail {
  readonly #client: Client;
  readonly #topic: string;
  #subscription: Subscription | undefined;
  /** The newest messages, oldest first. */
  #kept: Shown[] = [];
  #received = 0;
  #bytes = 0;
  #paused = false;
  #closed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastRender = 0;
  readonly #status: HTMLElement;
  readonly #counters: HTMLElement;
  readonly #list: HTMLElement;

  constructor(client: Client, main: HTMLElement, topic: string, route: pb.TopicRoute | undefined) {
    this.#client = client;
    this.#topic = topic;
    this.#status = el("span", { class: "snapshot", role: "status", "aria-live": "polite", text: "subscribing" });
    this.#counters = el("span", { class: "counters", text: "0 messages" });
    this.#list = el("ol", { class: "tail", "aria-label": `messages on ${topic}`, tabindex: 0 });
    const pause = el("button", { type: "button", "aria-pressed": "false", text: "Pause" });
    pause.addEventListener("click", () => {
      this.#paused = !this.#paused;
      pause.setAttribute("aria-pressed", String(this.#paused));
      pause.textContent = this.#paused ? "Resume" : "Pause";
      this.#schedule();
    });
    main.replaceChildren(
      el("section", { class: "panel topic-panel", "aria-label": `topic ${topic}` },
        el("div", { class: "panel-title" }, el("h2", { text: topic }), this.#status, this.#counters, pause),
        route === undefined || route.publish ? this.#publishBox() : el("p", { class: "muted", text: "This connection may not publish here." }),
        this.#list),
    );
    void this.#start(route?.history ?? false);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#subscription?.unsubscribe().catch(() => undefined);
  }

  async #start(history: boolean): Promise<void> {
    try {
      const subscription = await this.#client.subscribeTopic(this.#topic, {
        start: history ? "earliest" : "latest",
        onEvent: (event) => this.#event(event),
      });
      if (this.#closed) {
        await subscription.unsubscribe();
        return;
      }
      this.#subscription = subscription;
      void subscription.closed.then((error) => {
        if (!this.#closed) this.#status.textContent = error === undefined ? "ended" : `ended: ${error.message}`;
      });
    } catch (error) {
      this.#status.textContent = `error: ${(error as Error).message}`;
    }
  }

  #event(event: Event): void {
    switch (event.body.case) {
      case "ready":
        this.#status.textContent = "live";
        this.#status.dataset.ready = "true";
        break;
      case "status":
        this.#status.textContent = event.body.value.available ? "live" : `source unavailable: ${event.body.value.error?.message ?? ""}`;
        break;
      case "message": {
        const message = event.body.value;
        this.#received++;
        this.#bytes += message.payload.length;
        this.#kept.push({
          offset: message.offset,
          partition: message.partition,
          key: message.key,
          at: new Date(Number(message.timestampMicros / 1000n)),
          payload: message.payload,
        });
        if (this.#kept.length > KEEP * 2) this.#kept = this.#kept.slice(-KEEP);
        this.#schedule();
        break;
      }
      default:
        break;
    }
  }

  #schedule(): void {
    if (this.#timer !== undefined) return;
    const wait = Math.max(0, this.#lastRender + RENDER_MS - performance.now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      requestAnimationFrame(() => this.#render());
    }, wait);
  }

  #render(): void {
    this.#lastRender = performance.now();
    this.#counters.textContent = `${count(this.#received)} messages · ${count(this.#bytes)} bytes`;
    this.#counters.dataset.received = String(this.#received);
    if (this.#paused) return;
    const newest = this.#kept.slice(-KEEP).reverse();
    this.#list.replaceChildren(...newest.map((m) => {
      const { kind, text } = describe(m.payload);
      return el("li", { class: `message ${kind}`, "data-offset": String(m.offset) },
        el("div", { class: "meta" },
          el("span", { text: `#${m.offset}` }),
          m.partition !== 0 ? el("span", { text: `partition ${m.partition}` }) : undefined,
          m.key !== "" ? el("span", { class: "msg-key", text: `key ${m.key}` }) : undefined,
          el("time", { datetime: m.at.toISOString(), text: m.at.toLocaleTimeString() }),
          el("span", { class: "kind", text: kind })),
        el("pre", { text }));
    }));
  }

  #publishBox(): HTMLElement {
    const payload = el("textarea", { id: "publish-payload", rows: 3, placeholder: '{"hello": "world"}' });
    const key = el("input", { id: "publish-key", placeholder: "key (optional)", autocomplete: "off" });
    const result = el("span", { class: "publish-result", role: "status", "aria-live": "polite" });
    const form = el("form", { class: "publish", "aria-label": "publish" },
      el("label", { for: "publish-payload", text: "Publish" }), payload,
      el("div", { class: "publish-row" }, key, el("button", { type: "submit", text: "Send" }), result));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#client.publish(this.#topic, payload.value, { key: key.value }).then(
        (published) => (result.textContent = `published at offset ${published.offset}`),
        (error: Error) => (result.textContent = `not published: ${error.message}`),
      );
    });
    payload.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
    });
    return form;
  }
}

/** How a payload is shown: indented JSON, UTF-8 text, or hex. */
export function describe(payload: Uint8Array): { kind: "json" | "text" | "hex"; text: string } {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(payload);
  } catch {
    const hex = [...payload.slice(0, 512)].map((b) => b.toString(16).padStart(2, "0"));
    const lines: string[] = [];
    for (let i = 0; i < hex.length; i += 16) lines.push(hex.slice(i, i + 16).join(" "));
    return { kind: "hex", text: lines.join("\n") + (payload.length > 512 ? "\n…" : "") };
  }
  try {
    return { kind: "json", text: JSON.stringify(JSON.parse(text), null, 2) };
  } catch {
    return { kind: "text", text };
  }
}
