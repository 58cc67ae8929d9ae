// Headless Chromium for the browser tests, and the pages they load: Debian's chromium (scripts/test installs it when
// absent; set CHROMIUM_PATH for one elsewhere), driven by playwright-core, with the flags that
// keep it from reaching for the network this machine does not have.
import { accessSync, constants } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

import { type Browser, chromium } from "playwright-core";

const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Launches headless Chromium; fails saying how to get it when it is not there. */
export async function launchChromium(): Promise<Browser> {
  try {
    accessSync(chromiumPath, constants.X_OK);
  } catch {
    throw new Error(`no Chromium at ${chromiumPath}: apt-get install chromium, or set CHROMIUM_PATH`);
  }
  return chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A page's files served on 127.0.0.1 (a free port), another origin than the feedgate server's:
 * each path the `files` map names (by prefix) with its content type and body, `/` otherwise. */
export async function servePage(
  page: string,
  files: Record<string, [contentType: string, body: string]> = {},
): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((request, response) => {
    const file = Object.entries(files).find(([path]) => request.url?.startsWith(path));
    const [contentType, body] = file?.[1] ?? ["text/html", page];
    response.writeHead(200, { "content-type": contentType }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
