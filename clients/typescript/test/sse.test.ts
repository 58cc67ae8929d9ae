// The server's Server-Sent Events transport (`/v1/sse`) read by a real browser `EventSource` in
// headless Chromium (no feedgate client code on the page): a table's snapshot and changes from a
// page on another origin (CORS), and a stream cut by a proxy that the browser reconnects by
// itself, sending `Last-Event-ID`, with nothing missed or doubled. The Rust suite's tests/sse.rs
// covers the rest with curl.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import type { Browser, Page } from "playwright-core";

import { launchChromium, servePage } from "./chromium.js";
import { Proxy } from "./proxy.js";
import { createTable, environment, TEST_TIMEOUT } from "./support.js";

const PAGE = `<!doctype html>
<meta charset="utf-8"><title>feedgate over SSE</title>
<p id="opens">0</p>
<script>
window.received = [];
const params = new URLSearchParams(location.search);
const source = new EventSource(params.get("stream"));
source.onopen = () => { document.getElementById("opens").textContent = String(Number(document.getElementById("opens").textContent) + 1); };
for (const type of ["change", "ready", "closed", "close"]) {
  source.addEventListener(type, (e) => {
    const data = JSON.parse(e.data);
    const change = data.change;
    const row = change && (change.newRow ?? change.oldRow);
    window.received.push(type === "change" ? change.kind.replace("CHANGE_KIND_", "") + " " + row.columns.id.int : type);
  });
}
</script>`;

let env: Awaited<ReturnType<typeof environment>>;
let pages: Awaited<ReturnType<typeof servePage>>;
let browser: Browser;
let page: Page;
let pageUrl: string;
let proxy: Proxy;

before(async () => {
  env = await environment();
  proxy = await Proxy.start(env.server.addr);
  pages = await servePage(PAGE);
  pageUrl = pages.url;
  browser = await launchChromium();
  page = await browser.newPage();
});

after(async () => {
  await browser?.close();
  await pages?.close();
  await proxy?.close();
  await env?.close();
});

async function received(): Promise<string[]> {
  return page.evaluate(() => (window as unknown as { received: string[] }).received);
}

/** Waits until the page has received `count` events; returns them all. */
async function receivedAtLeast(count: number): Promise<string[]> {
  await page.waitForFunction(
    (n) => (window as unknown as { received: string[] }).received.length >= n,
    count,
    { timeout: 20_000 },
  );
  return received();
}

test("an EventSource reads a table's snapshot and changes, and resumes after a cut", TEST_TIMEOUT, async () => {
  const table = await createTable(env.db);
  await env.db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'one'), (2, 'two')`);
  const stream = `http://127.0.0.1:${proxy.port}/v1/sse?${new URLSearchParams({ table, include_initial: "true" })}`;
  await page.goto(`${pageUrl}?${new URLSearchParams({ stream })}`);

  const first = await receivedAtLeast(3);
  assert.deepEqual(first.slice(0, 2).sort(), ["INITIAL 1", "INITIAL 2"]);
  assert.equal(first[2], "ready");
  await env.db.query(`INSERT INTO ${table} (id, name) VALUES (3, 'three')`);
  assert.equal((await receivedAtLeast(4))[3], "INSERT 3");

  // Cut the stream; write while the browser waits to reconnect (its retry delay is seconds).
  proxy.cut();
  await env.db.query(`INSERT INTO ${table} (id, name) VALUES (4, 'four')`);
  await env.db.query(`UPDATE ${table} SET name = 'uno' WHERE id = 1`);
  await env.db.query(`DELETE FROM ${table} WHERE id = 2`);
  await page.waitForFunction(() => document.getElementById("opens")?.textContent === "2", null, {
    timeout: 20_000,
  });
  await env.db.query(`INSERT INTO ${table} (id, name) VALUES (5, 'five')`);
  await receivedAtLeast(8);
  // A moment for anything doubled to show up behind the last change.
  await env.db.query(`INSERT INTO ${table} (id, name) VALUES (6, 'six')`);
  const all = await receivedAtLeast(9);
  assert.deepEqual(all.slice(3), ["INSERT 3", "INSERT 4", "UPDATE 1", "DELETE 2", "INSERT 5", "INSERT 6"]);
});
