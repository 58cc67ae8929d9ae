// The dashboard, as feedgate serves it at /ui/, in headless Chromium against a real server
// (with --demo) and PostgreSQL: a table's rows, SQL changes marked as they happen, a filter,
// a server restart resumed without losing a change, the demo stream's tail and a publish, a
// 10,000-row table and a topic at 1,000 messages/s (timings reported, not asserted), keyboard
// use and a phone-width layout. Screenshots go to build/screenshots/. Set CHROMIUM_PATH for a
// browser elsewhere than /usr/bin/chromium.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createHmac } from "node:crypto";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

import pg from "pg";
import type { Browser, Page } from "playwright-core";

import { Client } from "../src/index.js";
import { launchChromium } from "./chromium.js";
import { createDatabase, dropDatabase, killServer, type Server, sleep, startServer, stopServer } from "./support.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const repo = join(root, "..", "..");
const shots = join(root, "build", "screenshots");
const WAIT = { timeout: 30_000 };

let databaseUrl: string;
let server: Server;
let db: pg.Client;
let browser: Browser;
let page: Page;

const base = () => `http://${server.addr}`;

before(async () => {
  mkdirSync(shots, { recursive: true });
  databaseUrl = await createDatabase();
  server = await startServer(databaseUrl, { extra: ["--demo"] });
  db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
});

after(async () => {
  await browser?.close();
  await db?.end();
  if (server !== undefined) await stopServer(server);
  if (databaseUrl !== undefined) await dropDatabase(databaseUrl);
});

/** Starts a page-side recorder of the gaps between animation frames (a frozen page has long ones). */
async function watchFrames(): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { frames_: number[]; watching_: boolean };
    w.frames_ = [];
    w.watching_ = true;
    let last = performance.now();
    const tick = (now: number) => {
      w.frames_.push(now - last);
      last = now;
      if (w.watching_) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
}

/** Stops the recorder: the longest gap and how many were over 100 ms. */
async function frameReport(): Promise<{ longest: number; over100: number; frames: number }> {
  return page.evaluate(() => {
    const w = window as unknown as { frames_: number[]; watching_: boolean };
    w.watching_ = false;
    return { longest: Math.round(Math.max(0, ...w.frames_)), over100: w.frames_.filter((f) => f > 100).length, frames: w.frames_.length };
  });
}

async function rowKeys(): Promise<string[]> {
  const keys = await page.locator(".grid-rows .row").evaluateAll((rows) => rows.map((row) => (row as HTMLElement).dataset.key!));
  return keys.sort((a, b) => Number(a) - Number(b));
}

async function openTable(table: string): Promise<void> {
  const button = page.locator(`[data-open="table=${encodeURIComponent(table)}"]`);
  await button.waitFor(WAIT);
  await button.click();
  await page.locator(".snapshot[data-ready=true]").waitFor(WAIT);
}

test("the committed page (ui/) is what the dashboard's sources build", () => {
  const check = spawnSync(process.execPath, [join(root, "examples", "dashboard", "build.mjs"), "--check"], { encoding: "utf8" });
  assert.equal(check.status, 0, check.stderr);
  const js = readFileSync(join(repo, "ui", "dashboard.js"));
  const css = readFileSync(join(repo, "ui", "dashboard.css"));
  console.log(`dashboard bundle: dashboard.js ${js.length} bytes (${gzipSync(js).length} gzipped), ` +
    `dashboard.css ${css.length} bytes (${gzipSync(css).length} gzipped)`);
});

test("feedgate serves the page at /ui/ and redirects / there", async () => {
  const root = await fetch(`${base()}/`, { redirect: "manual" });
  assert.equal(root.status, 307);
  assert.equal(root.headers.get("location"), "/ui/");
  const index = await fetch(`${base()}/ui/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get("content-type") ?? "", /text\/html/);
  assert.match(index.headers.get("content-security-policy") ?? "", /default-src 'self'/);
  assert.match(await index.text(), /dashboard\.js/);
  assert.equal((await fetch(`${base()}/ui/dashboard.js`)).headers.get("content-type"), "text/javascript; charset=utf-8");
  assert.equal((await fetch(`${base()}/ui/nothing.js`)).status, 404);
});

test("a table: rows, changes marked as they happen, a filter, and a restart resumed", { timeout: 180_000 }, async () => {
  await db.query("CREATE TABLE dash_items (id bigint PRIMARY KEY, name text NOT NULL, price numeric)");
  await db.query("SELECT feedgate.watch('public.dash_items')");
  await db.query("INSERT INTO dash_items VALUES (1, 'one', 5), (2, 'two', 15), (3, 'three', 20)");
  const started = Date.now();
  await page.goto(`${base()}/`);
  await page.locator("#state[data-state=open]").waitFor(WAIT);
  await page.locator('[data-open="table=public.dash_items"]').waitFor(WAIT);
  console.log(`dashboard first render: connected with the catalog listed ${Date.now() - started} ms after navigation`);
  assert.equal(new URL(page.url()).pathname, "/ui/");
  await openTable("public.dash_items");
  await page.locator('.counters[data-rows="3"]').waitFor(WAIT);
  assert.deepEqual(await rowKeys(), ["1", "2", "3"]);
  assert.match(await page.locator('.row[data-key="2"]').innerText(), /two/);

  // The server panel has sampled the page's own connection (for the screenshot).
  await page.waitForFunction(() => document.querySelector(".chart-value")?.textContent === "1", null, WAIT);

  await db.query("INSERT INTO dash_items VALUES (4, 'four', 30)");
  await page.locator('.row.insert[data-key="4"]').waitFor(WAIT);
  await db.query("UPDATE dash_items SET name = 'uno' WHERE id = 1");
  await page.locator('.row.update[data-key="1"] .cell.changed', { hasText: "uno" }).waitFor(WAIT);
  await db.query("DELETE FROM dash_items WHERE id = 2");
  await page.locator('.row.delete[data-key="2"]').waitFor(WAIT);
  await page.screenshot({ path: join(shots, "table.png") });
  // A deleted row stays marked for a few seconds, then goes.
  await page.locator('.row[data-key="2"]').waitFor({ state: "detached", ...WAIT });
  assert.deepEqual(await rowKeys(), ["1", "3", "4"]);
  assert.match(await page.locator(".counters").innerText(), /1 inserted · 1 updated · 1 deleted/);

  // Filter: price > 10 shows exactly rows 3 and 4; changes are seen through it.
  await page.locator(".controls summary").click();
  await page.getByRole("button", { name: "Add condition" }).click();
  await page.locator(".cond-column").selectOption("price");
  await page.locator(".cond-op").selectOption("gt");
  await page.locator(".cond-value").fill("10");
  await page.getByRole("button", { name: "Apply" }).click();
  await page.locator('.counters[data-rows="2"]').waitFor(WAIT);
  await page.locator(".snapshot[data-ready=true]").waitFor(WAIT);
  assert.deepEqual(await rowKeys(), ["3", "4"]);
  await db.query("INSERT INTO dash_items VALUES (5, 'five', 50), (6, 'six', 1)");
  await db.query("UPDATE dash_items SET price = 2 WHERE id = 3");
  await page.locator('.row.insert[data-key="5"]').waitFor(WAIT);
  await page.locator('.row.delete[data-key="3"]').waitFor(WAIT);
  await page.locator('.row[data-key="3"]').waitFor({ state: "detached", ...WAIT });
  assert.deepEqual(await rowKeys(), ["4", "5"]);
  await page.screenshot({ path: join(shots, "table-filtered.png") });

  // The server dies; a change made while it is down arrives once the page has reconnected.
  const addr = server.addr;
  await killServer(server);
  await page.locator("#state[data-state=reconnecting]").waitFor(WAIT);
  await db.query("INSERT INTO dash_items VALUES (7, 'seven', 70)");
  await db.query("UPDATE dash_items SET price = 3 WHERE id = 4");
  server = await startServer(databaseUrl, { listen: addr, extra: ["--demo"] });
  await page.locator("#state[data-state=open]").waitFor(WAIT);
  await page.locator('.row.insert[data-key="7"]').waitFor(WAIT);
  await page.locator('.row[data-key="4"]').waitFor({ state: "detached", ...WAIT });
  assert.deepEqual(await rowKeys(), ["5", "7"]);
  const { rows } = (await db.query("SELECT count(*)::int AS rows FROM dash_items WHERE price > 10")).rows[0] as { rows: number };
  assert.equal(await page.locator(".counters").getAttribute("data-rows"), String(rows));
});

test("the column chooser and the squash interval reopen the view", async () => {
  // A query string makes this a new page, not a move within the one the last test left.
  await page.goto(`${base()}/ui/?columns#table=public.dash_items`);
  await page.locator(".snapshot[data-ready=true]").waitFor(WAIT);
  await page.locator(".controls summary").click();
  await page.locator('input[name=column][value="name"]').uncheck();
  assert.ok(await page.locator('input[name=column][value="id"]').isDisabled(), "the key's columns always stay");
  await page.locator("#squash").fill("300");
  await page.getByRole("button", { name: "Apply" }).click();
  await page.locator(".snapshot[data-ready=true]").waitFor(WAIT);
  await page.waitForFunction(() => !document.querySelector(".grid-head")?.textContent?.includes("name"), null, WAIT);
  const head = await page.locator(".grid-head .cell").allInnerTexts();
  assert.equal(head.length, 2, head.join(" | "));
  assert.match(head[0]!, /^id/);
  assert.equal(head[1], "price");
  // Squashed: three quick updates of one row arrive as one, marked.
  for (const price of [71, 72, 73]) await db.query(`UPDATE dash_items SET price = ${price} WHERE id = 7`);
  await page.locator('.row.update[data-key="7"]', { hasText: "73" }).waitFor(WAIT);
  const updated = async () => Number(/(\d+) updated/.exec(await page.locator(".counters").innerText())![1]);
  const squashed = await updated();
  assert.ok(squashed === 1 || squashed === 2, `${squashed} updates for 3 squashed ones`);
  // A change to a column not chosen is not sent at all.
  await db.query("UPDATE dash_items SET name = 'SEVEN' WHERE id = 7");
  await sleep(1_000);
  assert.equal(await updated(), squashed);
});

test("a server that needs a token: the page asks for one, and connects with it", async () => {
  const secret = "dashboard-test-secret-of-32-bytes!!";
  const b64 = (data: string | Buffer) => Buffer.from(data).toString("base64url");
  const header = b64(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64(JSON.stringify({ sub: "dash", exp: Math.floor(Date.now() / 1000) + 600, roles: ["user"] }));
  const token = `${header}.${payload}.${b64(createHmac("sha256", secret).update(`${header}.${payload}`).digest())}`;
  const keyed = await startServer(databaseUrl, { anonymous: false, extra: ["--hs256-secret", secret] });
  const secured = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  try {
    await secured.goto(`http://${keyed.addr}/`);
    await secured.locator("#tables-note", { hasText: "needs a token" }).waitFor(WAIT);
    await secured.locator("#token").fill(token);
    await secured.getByRole("button", { name: "Connect" }).click();
    await secured.locator('[data-open="table=public.dash_items"]').click(WAIT);
    await secured.locator(".snapshot[data-ready=true]").waitFor(WAIT);
    assert.equal(await secured.locator("#state").getAttribute("data-state"), "open");
  } finally {
    await secured.close();
    await stopServer(keyed);
  }
});

test("a topic: the demo stream's tail, and a publish from the page", async () => {
  await page.goto(`${base()}/ui/#topic=demo.prices`);
  await page.locator("#state[data-state=open]").waitFor(WAIT);
  await page.waitForFunction(() => Number(document.querySelector<HTMLElement>(".counters")?.dataset.received ?? 0) >= 5, null, WAIT);
  const tick = JSON.parse(await page.locator(".message.json pre").first().innerText()) as { symbol: string; price: number };
  assert.equal(typeof tick.symbol, "string");
  assert.equal(typeof tick.price, "number");
  await page.screenshot({ path: join(shots, "topic.png") });

  // Open another topic from the form and publish to it from the page and from Node.
  await page.locator("#topic-name").fill("dash.chat");
  await page.locator("#topic-name").press("Enter");
  await page.locator('.topic-panel[aria-label="topic dash.chat"] .snapshot[data-ready=true]').waitFor(WAIT);
  await page.locator("#publish-payload").fill('{"from": "the page"}');
  await page.locator("#publish-key").fill("k1");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator(".publish-result", { hasText: "published at offset" }).waitFor(WAIT);
  await page.locator(".message.json pre", { hasText: '"from": "the page"' }).waitFor(WAIT);
  assert.match(await page.locator(".message .msg-key").first().innerText(), /k1/);
  const node = await Client.connect(server.url);
  await node.publish("dash.chat", new Uint8Array([0xff, 0x00, 0x01]));
  await node.publish("dash.chat", "plain words");
  await node.close();
  await page.locator(".message.hex pre", { hasText: "ff 00 01" }).waitFor(WAIT);
  await page.locator(".message.text pre", { hasText: "plain words" }).waitFor(WAIT);
  assert.equal(await page.locator(".counters").getAttribute("data-received"), "3");
});

test("10,000 rows load and scroll without freezing the page", { timeout: 120_000 }, async () => {
  await db.query("CREATE TABLE dash_big (id bigint PRIMARY KEY, name text, price numeric, added timestamptz)");
  await db.query("SELECT feedgate.watch('public.dash_big')");
  await db.query("INSERT INTO dash_big SELECT g, 'row ' || g, g * 1.5, now() FROM generate_series(1, 10000) g");
  await page.goto(`${base()}/ui/`);
  await page.locator('[data-open="table=public.dash_big"]').waitFor(WAIT);
  await watchFrames();
  const started = Date.now();
  await page.locator('[data-open="table=public.dash_big"]').click();
  await page.locator('.counters[data-rows="10000"]').waitFor(WAIT);
  const loaded = Date.now() - started;
  const loading = await frameReport();
  const inDom = await page.locator(".grid-rows .row").count();
  await watchFrames();
  const scrolled = Date.now();
  await page.locator(".grid-scroll").evaluate((scroller) => (scroller.scrollTop = scroller.scrollHeight));
  await page.locator('.row[data-key="10000"]').waitFor(WAIT);
  const scrolling = Date.now() - scrolled;
  await db.query("UPDATE dash_big SET name = 'last one' WHERE id = 10000");
  await page.locator('.row.update[data-key="10000"]').waitFor(WAIT);
  const after = await frameReport();
  console.log(`10,000-row grid: all rows in the view ${loaded} ms after the click; longest frame while loading ` +
    `${loading.longest} ms (${loading.over100} of ${loading.frames} frames over 100 ms); ${inDom} rows in the DOM; ` +
    `scrolled to the last row in ${scrolling} ms; longest frame after ${after.longest} ms`);
  assert.ok(inDom < 200, `virtualised: ${inDom} rows in the DOM`);
});

test("a topic at 1,000 messages/s: exact counts, throttled rendering", { timeout: 120_000 }, async () => {
  await page.goto(`${base()}/ui/#topic=dash.fast`);
  await page.locator('.topic-panel .snapshot[data-ready=true]').waitFor(WAIT);
  await watchFrames();
  const node = await Client.connect(server.url);
  const total = 3_000;
  const started = Date.now();
  for (let sent = 0; sent < total; sent += 100) {
    await Promise.all(Array.from({ length: 100 }, (_, n) => node.publish("dash.fast", JSON.stringify({ n: sent + n }))));
    await sleep(Math.max(0, started + (sent + 100) - Date.now()));
  }
  const rate = Math.round(total / ((Date.now() - started) / 1000));
  await node.close();
  await page.waitForFunction((want) => document.querySelector<HTMLElement>(".counters")?.dataset.received === String(want), total, WAIT);
  const frames = await frameReport();
  const shown = await page.locator(".message").count();
  console.log(`topic tail at ${rate} messages/s: ${total} counted exactly; ${shown} shown; longest frame ${frames.longest} ms ` +
    `(${frames.over100} of ${frames.frames} frames over 100 ms)`);
  assert.ok(shown <= 200);
});

test("keyboard and a phone-width screen", async () => {
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(`${base()}/ui/`);
  await page.locator('[data-open="table=public.dash_items"]').waitFor(WAIT);
  await page.keyboard.press("/");
  const first = await page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.open);
  assert.ok(first?.startsWith("table="), `focus on ${first}`);
  // ↓ moves through the tables list; Enter opens the focused one.
  let focused = first;
  while (focused !== "table=public.dash_items") {
    await page.keyboard.press("ArrowDown");
    const next = await page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.open);
    assert.notEqual(next, focused, "ArrowDown moved");
    focused = next;
  }
  await page.keyboard.press("Enter");
  await page.locator('.table-panel[aria-label="table public.dash_items"] .snapshot[data-ready=true]').waitFor(WAIT);
  await page.screenshot({ path: join(shots, "dashboard.png") });

  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base()}/ui/#table=public.dash_items`);
  await page.locator(".snapshot[data-ready=true]").waitFor(WAIT);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone's screen`);
  await page.screenshot({ path: join(shots, "phone.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });
});
