// Headless Chromium for the browser tests: Debian's chromium (scripts/test installs it when
// absent; set CHROMIUM_PATH for one elsewhere), driven by playwright-core, with the flags that
// keep it from reaching for the network this machine does not have.
import { accessSync, constants } from "node:fs";

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
