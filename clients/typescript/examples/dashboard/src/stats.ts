/**
 * The server panel: connections, subscriptions, deliveries per second (from `/v1/stats`) and
 * the changefeed's read lag (the mean of `feedgate_changefeed_read_lag_seconds` over each
 * second, from `/metrics`), sampled every second and drawn as small time-series charts (SVG,
 * the last `POINTS` samples).
 */

import { el } from "./dom.js";

const SAMPLE_MS = 1_000;
const POINTS = 60;
const SVG = "http://www.w3.org/2000/svg";

interface Series {
  unit: string;
  values: number[];
  value: HTMLElement;
  line: SVGPolylineElement;
}

type SeriesName = "connections" | "subscriptions" | "deliveries" | "lag";

interface Stats {
  connections: number;
  subscriptions: number;
  delivered_per_second: number;
  database: string;
}

export class ServerPanel {
  readonly #series: Record<SeriesName, Series>;
  readonly #database: HTMLElement;
  /** The lag histogram's last sum and count, to take the mean of what came since. */
  #lag: { sum: number; count: number } | undefined;

  constructor(container: HTMLElement) {
    const series = (label: string, unit: string): Series => {
      const line = document.createElementNS(SVG, "polyline");
      const svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", `0 0 ${POINTS - 1} 30`);
      svg.setAttribute("preserveAspectRatio", "none");
      svg.setAttribute("aria-hidden", "true");
      svg.append(line);
      const value = el("span", { class: "chart-value", text: "–" });
      container.append(el("figure", { class: "chart" }, el("figcaption", {}, el("span", { text: label }), value), svg));
      return { unit, values: [], value, line };
    };
    this.#database = el("p", { class: "muted" });
    this.#series = {
      connections: series("Connections", ""),
      subscriptions: series("Subscriptions", ""),
      deliveries: series("Deliveries/s", "/s"),
      lag: series("Changefeed lag", " ms"),
    };
    container.append(this.#database);
  }

  start(): void {
    void this.#sample();
    setInterval(() => void this.#sample(), SAMPLE_MS);
  }

  async #sample(): Promise<void> {
    try {
      const stats = (await (await fetch("/v1/stats")).json()) as Stats;
      this.#push("connections", stats.connections);
      this.#push("subscriptions", stats.subscriptions);
      this.#push("deliveries", stats.delivered_per_second);
      this.#database.textContent = `database: ${stats.database}`;
      const lag = readLag(await (await fetch("/metrics")).text());
      if (lag !== undefined) {
        const previous = this.#lag;
        this.#lag = lag;
        if (previous !== undefined) {
          const changes = lag.count - previous.count;
          this.#push("lag", changes > 0 ? ((lag.sum - previous.sum) / changes) * 1000 : 0);
        }
      }
    } catch {
      this.#database.textContent = "server statistics unavailable";
    }
  }

  #push(name: SeriesName, value: number): void {
    const series = this.#series[name];
    series.values.push(value);
    if (series.values.length > POINTS) series.values.shift();
    const max = Math.max(1, ...series.values);
    const offset = POINTS - series.values.length;
    series.line.setAttribute("points", series.values.map((v, i) => `${offset + i},${(30 - (v / max) * 28 - 1).toFixed(2)}`).join(" "));
    const shown = Number.isInteger(value) ? value.toLocaleString("en-US") : value.toFixed(1);
    series.value.textContent = `${shown}${series.unit}`;
  }
}

/** The changefeed lag histogram's sum and count from Prometheus text; undefined without one. */
function readLag(text: string): { sum: number; count: number } | undefined {
  const sum = /^feedgate_changefeed_read_lag_seconds_sum(?:\{[^}]*\})? (\S+)$/m.exec(text);
  const total = /^feedgate_changefeed_read_lag_seconds_count(?:\{[^}]*\})? (\S+)$/m.exec(text);
  if (sum === null || total === null) return undefined;
  return { sum: Number(sum[1]), count: Number(total[1]) };
}
