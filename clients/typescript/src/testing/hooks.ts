/**
 * A server and a client per test file, with any runner's hooks: node:test's `before`/`after`
 * or Vitest's `beforeAll`/`afterAll` (both take a function that returns a promise).
 *
 * ```ts
 * import { before, after, test } from "node:test";          // or: from "vitest" (beforeAll, afterAll)
 * const fg = useFeedgate({ before, after }, { databaseUrl, watch: ["public.orders"] });
 * test("...", async () => { const sub = await fg.client.subscribeTable("public.orders"); ... });
 * ```
 *
 * Not here: starting the process (server.ts).
 */

import type { Client, ConnectOptions } from "../client.js";
import { type Server, type ServerOptions, startServer } from "./server.js";

/** A runner's "once before the file's tests" and "once after them" hooks. */
export interface Hooks {
  before: (fn: () => Promise<void>) => unknown;
  after: (fn: () => Promise<void>) => unknown;
}

export interface FeedgateOptions extends ServerOptions {
  /** Options of the client it connects (default: named "feedgate-test"); false: no client. */
  client?: ConnectOptions | false;
}

/** What `useFeedgate` gives the tests, filled in by the `before` hook. */
export interface Feedgate {
  /** The running server. */
  readonly server: Server;
  /** A client connected to it (unless `client: false`). */
  readonly client: Client;
  /** Another client connected to the server, closed by the `after` hook. */
  connect(options?: ConnectOptions): Promise<Client>;
  /** Wraps a test's function so that when it fails, the lines the server logged while it ran
   * are appended to the error's message, which is what the runner reports (node:test and
   * Vitest alike): `test("...", feedgate.withLog(async () => { ... }))`. */
  withLog<A extends unknown[]>(fn: (...args: A) => unknown): (...args: A) => Promise<void>;
}

/** `fn`, with `server`'s log lines logged while it ran appended to the message of what it
 * throws. The error is rethrown, as it was, but for its message. */
export function withServerLog<A extends unknown[]>(
  server: () => Server,
  fn: (...args: A) => unknown,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const log = server().log;
    const start = log.length;
    try {
      await fn(...args);
    } catch (error) {
      const lines = log.slice(start);
      const section = `\n---------------- feedgate server log (${server().addr}, during this test) ----------------\n${
        lines.length > 0 ? lines.join("\n") : "(nothing)"
      }`;
      if (error instanceof Error) {
        error.message += section;
        if (error.stack !== undefined) error.stack += section;
      }
      throw error;
    }
  };
}

/** Registers hooks that start a server (and connect a client) before the file's tests and
 * close both after them; returns the object they fill in. `options` may be a function, called
 * in the `before` hook: for options known only then (a database an earlier hook created). */
export function useFeedgate(
  hooks: Hooks,
  options: FeedgateOptions | (() => FeedgateOptions | Promise<FeedgateOptions>) = {},
): Feedgate {
  let server: Server | undefined;
  let client: Client | undefined;
  const clients: Client[] = [];
  const fixture: Feedgate = {
    get server() {
      if (server === undefined) throw new Error("useFeedgate: the server starts in the `before` hook");
      return server;
    },
    get client() {
      if (client === undefined) throw new Error("useFeedgate: no client (`client: false`, or before the `before` hook)");
      return client;
    },
    async connect(connectOptions: ConnectOptions = {}) {
      const connected = await fixture.server.connect(connectOptions);
      clients.push(connected);
      return connected;
    },
    withLog(fn) {
      return withServerLog(() => fixture.server, fn);
    },
  };
  hooks.before(async () => {
    const { client: clientOptions, ...serverOptions } = typeof options === "function" ? await options() : options;
    server = await startServer(serverOptions);
    if (clientOptions !== false) client = await fixture.connect({ clientName: "feedgate-test", ...clientOptions });
  });
  hooks.after(async () => {
    await Promise.all(clients.splice(0).map((each) => each.close()));
    await server?.stop();
  });
  return fixture;
}
