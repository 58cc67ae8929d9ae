/**
 * A test-side TCP proxy (Node's `net`) between a client and a server, that a test can use to
 * break connections on purpose: cut every connection (both directions at once; bytes in the
 * proxy are lost, and neither side gets a WebSocket close frame), cut one in the middle of a
 * frame (forward all but the last byte of the server's next chunk, then end), pause (hold the
 * bytes both ways, in the kernel's buffers) and resume, and refuse new connections (accept and
 * close at once). It forwards bytes and looks at none of them.
 *
 * Sockets are ended with `destroy()`, not `resetAndDestroy()` (an RST): on Node 20.20 the latter,
 * used in `cut()`, left the test process spinning at 100% CPU on exit (in
 * `node::Environment::CleanupHandles`) in 7 of 24 runs of restart.test.ts; 0 of 24 with
 * `destroy()`.
 */

import { createServer, type Server as NetServer, type Socket, connect } from "node:net";

/** One proxied connection: the client's socket and the one to the server. */
interface Pair {
  client: Socket;
  upstream: Socket;
}

export class Proxy {
  /** Connections accepted so far (refused ones included). */
  accepted = 0;
  /** Connections closed at once because the proxy was refusing. */
  refused = 0;

  readonly #server: NetServer;
  readonly #target: { host: string; port: number };
  readonly #pairs = new Set<Pair>();
  #paused = false;
  #refusing = false;
  #cutMidFrame: (() => void) | undefined;
  #cutAfter = 0;

  private constructor(server: NetServer, target: { host: string; port: number }) {
    this.#server = server;
    this.#target = target;
  }

  /** Listens on 127.0.0.1 (a free port) and forwards to `target` ("host:port"). */
  static async start(target: string): Promise<Proxy> {
    const separator = target.lastIndexOf(":");
    const host = target.slice(0, separator);
    const port = Number(target.slice(separator + 1));
    let proxy!: Proxy;
    const server = createServer((socket) => proxy.#accept(socket));
    proxy = new Proxy(server, { host, port });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get port(): number {
    const address = this.#server.address();
    if (address === null || typeof address === "string") throw new Error("the proxy is not listening");
    return address.port;
  }

  /** The feedgate WebSocket URL through this proxy. */
  get url(): string {
    return `ws://127.0.0.1:${this.port}/v1/ws`;
  }

  /** Connections open now. */
  get open(): number {
    return this.#pairs.size;
  }

  /** Closes every open connection, both sides; bytes held by a pause are lost. */
  cut(): void {
    for (const pair of [...this.#pairs]) {
      pair.client.destroy();
      pair.upstream.destroy();
      this.#pairs.delete(pair);
    }
  }

  /** Cuts the connections inside a frame: after `afterBytes` more bytes from the server (0: at
   * once), the next chunk from the server is forwarded but for its last byte, then both sides
   * end. Resolves once that happened. */
  cutMidFrame(afterBytes = 0): Promise<void> {
    this.#cutAfter = afterBytes;
    return new Promise((resolve) => (this.#cutMidFrame = resolve));
  }

  /** Holds every byte, both ways, of open and new connections until `resume()`. */
  pause(): void {
    this.#paused = true;
    for (const pair of this.#pairs) {
      pair.client.pause();
      pair.upstream.pause();
    }
  }

  resume(): void {
    this.#paused = false;
    for (const pair of this.#pairs) {
      pair.client.resume();
      pair.upstream.resume();
    }
  }

  /** While on, every new connection is accepted and closed at once. */
  refuse(on: boolean): void {
    this.#refusing = on;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  #accept(client: Socket): void {
    this.accepted += 1;
    if (this.#refusing) {
      this.refused += 1;
      client.destroy();
      return;
    }
    const upstream = connect(this.#target.port, this.#target.host);
    const pair: Pair = { client, upstream };
    this.#pairs.add(pair);
    if (this.#paused) {
      client.pause();
      upstream.pause();
    }
    const drop = () => {
      if (!this.#pairs.delete(pair)) return;
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.setNoDelay(true);
      socket.on("error", drop);
      socket.on("close", drop);
    }
    client.on("data", (chunk: Buffer) => this.#forward(client, upstream, chunk));
    upstream.on("data", (chunk: Buffer) => {
      const cut = this.#cutMidFrame;
      if (cut !== undefined && this.#cutAfter > 0) {
        this.#cutAfter -= chunk.length;
      } else if (cut !== undefined && chunk.length >= 2) {
        this.#cutMidFrame = undefined;
        for (const other of [...this.#pairs]) {
          if (other !== pair) {
            other.client.destroy();
            other.upstream.destroy();
            this.#pairs.delete(other);
          }
        }
        this.#pairs.delete(pair);
        upstream.destroy();
        client.end(chunk.subarray(0, chunk.length - 1), () => client.destroy());
        cut();
        return;
      }
      this.#forward(upstream, client, chunk);
    });
  }

  /** Writes `chunk` on, reading no more from `from` until `to` has room (backpressure). */
  #forward(from: Socket, to: Socket, chunk: Buffer): void {
    if (to.write(chunk)) return;
    from.pause();
    to.once("drain", () => {
      if (!this.#paused) from.resume();
    });
  }
}
