/**
 * A real `feedgate serve` process for tests (Node only): started on a free port, waited for,
 * stopped.
 *
 * `startServer(options)` runs the binary at `options.binary`, else `$FEEDGATE_BIN`, else
 * `feedgate` on `PATH`; it reads the address the server reports ("listening addr=...") instead
 * of guessing a port, and, when the server has a database, waits until its changefeed reader
 * is connected, so a test's first subscription never races the start. Everything the server
 * logs is kept in `server.log`. Not here: test-runner hooks (hooks.ts), databases (the test
 * owns its own).
 */

/// <reference types="node" />

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

import { Client, type ConnectOptions } from "../client.js";
import { toToml, type TomlTable } from "./toml.js";

/** How long a server may take to report its address (a debug build on a busy machine). */
export const START_TIMEOUT_MS = 60_000;
/** How long its changefeed reader may take to connect to the database. */
export const DATABASE_TIMEOUT_MS = 30_000;
/** How long a SIGTERM'd server may take to shut down before it is killed. */
export const STOP_TIMEOUT_MS = 15_000;
/** Between two looks at `/v1/stats` while waiting for the database (the server's own status:
 * there is nothing to wait on). */
const POLL_MS = 20;

/** How to start a server. The defaults make a test server: a free port on 127.0.0.1, anonymous
 * access, no request rate limit, no database (topics only). */
export interface ServerOptions {
  /** The `feedgate` binary; default $FEEDGATE_BIN, else `feedgate` on PATH. */
  binary?: string;
  /** PostgreSQL for table changefeeds (`--database-url`); none: no changefeeds. */
  databaseUrl?: string;
  /** Tables to watch from the start (`--watch`); tables can also opt in from SQL with
   * `SELECT feedgate.watch('public.orders')`. */
  watch?: string[];
  /** Configuration: TOML text, or an object written out as TOML (`{ memory: { history_size: 1000 } }`). */
  config?: string | TomlTable;
  /** More command-line arguments for `feedgate serve`. */
  args?: string[];
  /** Let clients in without a token (default true); false: `args`/`config` configure keys. */
  anonymous?: boolean;
  /** Where to listen (default 127.0.0.1:0, a free port). */
  listen?: string;
  /** `FEEDGATE_LOG` for the server (default "info,sqlx=warn"). */
  logLevel?: string;
  /** Wait for the changefeed reader to connect when there is a database (default true). */
  waitForDatabase?: boolean;
  /** More environment variables for the server process. */
  env?: Record<string, string>;
}

/** Thrown when the server cannot be found, does not start, or does not reach its database;
 * the message carries its log. */
export class ServerError extends Error {
  override name = "ServerError";
}

/** A running `feedgate serve` process. */
export class Server {
  /** The WebSocket endpoint, for `Client.connect`. */
  readonly url: string;

  constructor(
    /** host:port it listens on. */
    readonly addr: string,
    /** What it was started with (a restart's changes included). */
    public options: ServerOptions,
    /** The `feedgate serve` process (a new one after `restart()`). */
    public process: ChildProcess,
    /** Every line the server logged so far, across restarts. */
    readonly log: string[],
  ) {
    this.url = `ws://${addr}/v1/ws`;
  }

  get port(): number {
    return Number(this.addr.slice(this.addr.lastIndexOf(":") + 1));
  }

  get databaseUrl(): string | undefined {
    return this.options.databaseUrl;
  }

  /** `Client.connect(this.url, options)`. */
  connect(options: ConnectOptions = {}): Promise<Client> {
    return Client.connect(this.url, options);
  }

  /** The server's `/v1/stats`. */
  async stats(): Promise<Record<string, unknown>> {
    return (await (await fetch(`http://${this.addr}/v1/stats`)).json()) as Record<string, unknown>;
  }

  get exited(): boolean {
    return this.process.exitCode !== null || this.process.signalCode !== null;
  }

  /** SIGTERM (a graceful shutdown: clients are closed with 1001), SIGKILL after
   * `STOP_TIMEOUT_MS`; resolves once it exited. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise((resolve) => this.process.once("exit", resolve));
    this.process.kill("SIGTERM");
    const timer = setTimeout(() => this.process.kill("SIGKILL"), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }

  /** SIGKILL: no shutdown, connections just drop; resolves once it exited. */
  async kill(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise((resolve) => this.process.once("exit", resolve));
    this.process.kill("SIGKILL");
    await exited;
  }

  /** Stops this server (SIGTERM; nothing to do after `kill()`) and runs it again with the same
   * options (and `changes`) on the same address, so that clients reconnect and resume. This
   * object becomes the new process, and `log` goes on after a line that marks the restart. */
  async restart(changes: ServerOptions = {}): Promise<this> {
    await this.stop();
    this.log.push(`--- @feedgate/client/testing: restarted on ${this.addr} ---`);
    const restarted = await startServer({ ...this.options, listen: this.addr, ...changes }, this.log);
    this.process = restarted.process;
    this.options = restarted.options;
    return this;
  }
}

/** The feedgate binary to run: `binary`, else $FEEDGATE_BIN, else `feedgate` on PATH. */
export function findBinary(binary?: string): string {
  const candidates = binary ?? process.env.FEEDGATE_BIN;
  const paths = candidates ? [candidates] : (process.env.PATH ?? "").split(delimiter).map((dir) => join(dir, "feedgate"));
  for (const path of paths) {
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not this one
    }
  }
  throw new ServerError(
    `no feedgate binary at ${candidates ?? "$FEEDGATE_BIN or PATH"}: install feedgate, or set FEEDGATE_BIN to its path`,
  );
}

/** Starts `feedgate serve`; resolves once it listens and, with a database, once its
 * changefeed reader is connected. Rejects with `ServerError` (and the log) otherwise. Its log
 * lines are appended to `log` when given. */
export async function startServer(options: ServerOptions = {}, log: string[] = []): Promise<Server> {
  const child = spawn(findBinary(options.binary), command(options), {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, FEEDGATE_LOG: options.logLevel ?? "info,sqlx=warn", ...options.env },
  });
  const addr = await listening(child, log);
  const server = new Server(addr, options, child, log);
  if (options.databaseUrl !== undefined && options.waitForDatabase !== false) await waitForDatabase(server);
  return server;
}

function command(options: ServerOptions): string[] {
  const args = ["serve", "--listen", options.listen ?? "127.0.0.1:0", "--requests-per-second", "0"];
  if (options.anonymous !== false) args.push("--allow-anonymous");
  if (options.databaseUrl !== undefined) args.push("--database-url", options.databaseUrl);
  for (const table of options.watch ?? []) args.push("--watch", table);
  if (options.config !== undefined) {
    const path = join(tmpdir(), `feedgate-test-${randomBytes(6).toString("hex")}.toml`);
    writeFileSync(path, typeof options.config === "string" ? options.config : toToml(options.config));
    args.push("--config", path);
  }
  return [...args, ...(options.args ?? [])];
}

/** Collects the server's log lines and resolves with the address it reports. */
function listening(child: ChildProcess, log: string[]): Promise<string> {
  const start = log.length;
  return new Promise<string>((resolve, reject) => {
    let buffered = "";
    let found = false;
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new ServerError(`feedgate did not start (${why}):\n${log.slice(start).slice(-60).join("\n")}`));
    };
    const timer = setTimeout(() => fail(`no address within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    child.stderr!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        log.push(line);
        const match = /listening addr=(\S+)/.exec(line);
        if (match && !found) {
          found = true;
          clearTimeout(timer);
          resolve(match[1]!);
        }
      }
    });
    child.on("error", (error) => fail(error.message));
    child.on("exit", (code, signal) => {
      if (!found) fail(`it exited with ${code ?? signal}`);
    });
  });
}

/** Resolves once the server's changefeed reader is connected. */
async function waitForDatabase(server: Server): Promise<void> {
  const deadline = Date.now() + DATABASE_TIMEOUT_MS;
  for (;;) {
    const status = (await server.stats()).database;
    if (status === "connected") return;
    if (Date.now() > deadline || server.exited) {
      await server.stop();
      throw new ServerError(
        `feedgate's changefeed reader did not connect within ${DATABASE_TIMEOUT_MS} ms (database: ${String(status)}):\n` +
          server.log.slice(-60).join("\n"),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
