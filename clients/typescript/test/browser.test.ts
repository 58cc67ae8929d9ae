// The client in a real browser: headless Chromium (Debian's chromium, driven by playwright-core)
// loads a page that bundles the client (esbuild), keeps a materialized view of a table in the
// DOM, and round-trips topic messages. Set CHROMIUM_PATH for a browser elsewhere than
// /usr/bin/chromium (scripts/test installs Debian's when it is absent).
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";
import type { Browser, Page } from "playwright-core";

import { Client } from "../src/index.js";
import { launchChromium, servePage } from "./chromium.js";
import { createTable, environment } from "./support.js";

const here = dirname(fileURLToPath(import.meta.url));

const PAGE = `<!doctype html>
<meta charset="utf-8"><title>feedgate in a browser</title>
<p id="status">connecting</p><ul id="rows"></ul><p id="message"></p>
<script type="module">
const status = document.getElementById("status");
const fail = (e) => { status.textContent = "error: " + (e?.message ?? e); };
window.addEventListener("error", (e) => fail(e.error ?? e.message));
window.addEventListener("unhandledrejection", (e) => fail(e.reason));
try {
  const { Client } = await import("/feedgate.js");
  const params = new URLSearchParams(location.search);
  const client = await Client.connect(params.get("ws"), { clientName: "chromium-test" });
  const list = document.getElementById("rows");
  let view;
  const render = () => list.replaceChildren(...[...view.rows.values()]
    .sort((a, b) => a.id - b.id)
    .map((row) => Object.assign(document.createElement("li"), { textContent: row.name, id: "row-" + row.id })));
  view = await client.materializedView(params.get("table"), { onChange: () => render() });
  await view.waitReady();
  render();
  const sub = await client.subscribeTopic("browser.echo");
  (async () => {
    for await (const event of sub) {
      if (event.body.case === "message") {
        document.getElementById("message").textContent = new TextDecoder().decode(event.body.value.payload);
      }
    }
  })().catch(fail);
  window.publish = async (text) => String((await client.publish("browser.echo", text)).offset);
  status.textContent = "ready";
} catch (e) { fail(e); }
</script>`;

let env: Awaited<ReturnType<typeof environment>>;
let pages: Awaited<ReturnType<typeof servePage>>;
let browser: Browser;
let page: Page;
let pageUrl: string;

before(async () => {
  env = await environment();
  const bundle = await build({
    entryPoints: [join(here, "..", "src", "index.js")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
  });
  const script = bundle.outputFiles[0]!.text;
  pages = await servePage(PAGE, { "/feedgate.js": ["text/javascript", script] });
  pageUrl = pages.url;
  browser = await launchChromium();
  page = await browser.newPage();
});

after(async () => {
  await browser?.close();
  await pages?.close();
  await env?.close();
});

async function waitForText(selector: string, text: string): Promise<void> {
  await page.waitForFunction(
    ([s, t]) => document.querySelector(s!)?.textContent === t,
    [selector, text],
    { timeout: 15_000 },
  );
}

test("a materialized view and a topic, in headless Chromium", async () => {
  const table = await createTable(env.db);
  await env.db.query(`INSERT INTO ${table} (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three')`);
  const query = new URLSearchParams({ ws: env.server.url, table });
  await page.goto(`${pageUrl}?${query}`);
  await page.waitForFunction(() => document.getElementById("status")?.textContent !== "connecting", null, {
    timeout: 20_000,
  });
  assert.equal(await page.textContent("#status"), "ready");
  assert.deepEqual(await page.locator("#rows li").allTextContents(), ["one", "two", "three"]);

  await env.db.query(`INSERT INTO ${table} (id, name) VALUES (4, 'four')`);
  await env.db.query(`UPDATE ${table} SET name = 'uno' WHERE id = 1`);
  await env.db.query(`DELETE FROM ${table} WHERE id = 2`);
  await waitForText("#row-4", "four");
  await waitForText("#row-1", "uno");
  await page.waitForSelector("#row-2", { state: "detached", timeout: 15_000 });
  assert.deepEqual(await page.locator("#rows li").allTextContents(), ["uno", "three", "four"]);

  // The page publishes and receives its own message; then a Node client publishes to the page.
  const offset = await page.evaluate(() => (window as unknown as { publish(t: string): Promise<string> }).publish("from chromium"));
  assert.ok(Number(offset) > 0);
  await waitForText("#message", "from chromium");
  const node = await Client.connect(env.server.url);
  await node.publish("browser.echo", "from node");
  await node.close();
  await waitForText("#message", "from node");
  assert.equal(await page.textContent("#status"), "ready");
});
