/**
 * One WebSocket connection: opening it within a deadline, its requests waiting for a response,
 * and the one report of its end.
 *
 * A `Connection` lives exactly as long as its socket. Responses resolve the Promise of the
 * request with the same `request_id`; events go to the callback the client gave (the client
 * routes them to subscriptions, which outlive connections). When the socket ends, every request
 * still waiting on it rejects with the reason (`lost`), then the client's `onLost` runs, once.
 * Knows nothing of reconnecting or subscriptions: `client.ts` decides those.
 */

import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  type Event as FeedEvent,
  RequestSchema,
  type Response,
  type ServerMessage,
  ServerMessageSchema,
} from "./gen/feedgate/v1/feedgate_pb.js";
import { ConnectionClosedError, ErrorCode, FeedgateError } from "./errors.js";

/** A request's command, as `create(RequestSchema, ...)` takes it. */
export type Command = MessageInitShape<typeof RequestSchema>["command"];

/** A constructor with the standard `WebSocket` API (the browser's, Node 22's, or `ws`). */
export type WebSocketConstructor = new (url: string) => WebSocket;

/** What a connection tells its owner. */
export interface ConnectionHandlers {
  /** Every event, in the order the server sent them. */
  onEvent: (event: FeedEvent) => void;
  /** The connection ended (called once, after its waiting requests were rejected), unless the
   * owner ended it with `close()`. Not called when `open()` fails: that rejects instead. */
  onLost: (connection: Connection, error: FeedgateError) => void;
}

/** How long `close()` waits for the server to answer the close frame (as the server waits for
 * the client's, RFC 6455's closing handshake) before it lets go of the socket. */
const CLOSE_TIMEOUT_MS = 3_000;

/** The close code this client sends when it ends a connection itself. */
const NORMAL_CLOSURE = 1000;

/** The close code this client sends after a frame it could not decode (RFC 6455 leaves
 * 4000-4999 to applications; the server uses 4000, 4001, 4008 and 4029). */
const UNDECODABLE_CLOSURE = 4002;

interface Pending {
  resolve: (response: Response) => void;
  reject: (error: FeedgateError) => void;
}

export class Connection {
  readonly #ws: WebSocket;
  readonly #handlers: ConnectionHandlers;
  readonly #pending = new Map<bigint, Pending>();
  #nextRequestId = 1n;
  /** Why the connection ended; undefined while it is up. */
  #lost: FeedgateError | undefined;
  /** Whether `onLost` may be called: from `open()`'s success until `close()`. */
  #reporting = false;
  /** Resolves when the socket reported its close. */
  readonly #gone: Promise<void>;

  private constructor(ws: WebSocket, handlers: ConnectionHandlers) {
    this.#ws = ws;
    this.#handlers = handlers;
    let gone!: () => void;
    this.#gone = new Promise((resolve) => (gone = resolve));
    ws.addEventListener("message", (message) => this.#receive(message.data));
    ws.addEventListener("close", (close) => {
      this.#lose(new ConnectionClosedError(close.code, close.reason));
      gone();
    });
    // Some implementations report a dropped connection with "error" alone.
    ws.addEventListener("error", () => {
      if (ws.readyState === ws.CLOSED) {
        this.#lose(new ConnectionClosedError(1006, "connection failed"));
        gone();
      }
    });
  }

  /**
   * Opens a WebSocket to `url`; rejects with `ConnectionClosedError` when it cannot be opened
   * within `timeoutMs` (the socket is then closed).
   */
  static async open(
    Impl: WebSocketConstructor,
    url: string,
    timeoutMs: number,
    handlers: ConnectionHandlers,
  ): Promise<Connection> {
    const ws = new Impl(url);
    ws.binaryType = "arraybuffer";
    const connection = new Connection(ws, handlers);
    await new Promise<void>((resolve, reject) => {
      const fail = (error: ConnectionClosedError) => {
        clearTimeout(timer);
        reject(error);
      };
      const timer = setTimeout(() => {
        const error = new ConnectionClosedError(1006, `no connection to ${url} after ${timeoutMs} ms`);
        connection.#lose(error);
        ws.close();
        fail(error);
      }, timeoutMs);
      ws.addEventListener("open", () => {
        clearTimeout(timer);
        resolve();
      });
      ws.addEventListener("close", (close) => {
        fail(new ConnectionClosedError(close.code, close.reason || `cannot connect to ${url}`));
      });
      // Some implementations report a failed connection with "error" alone.
      ws.addEventListener("error", () => fail(new ConnectionClosedError(1006, `cannot connect to ${url}`)));
    });
    connection.#reporting = true;
    return connection;
  }

  /** Why the connection ended; undefined while it is up. */
  get lost(): FeedgateError | undefined {
    return this.#lost;
  }

  /**
   * Sends one request; resolves with its response, rejects with its `Error` as a
   * `FeedgateError`, or with the connection's end (`ConnectionClosedError`) when that comes
   * first. Rejects at once, having sent nothing, when the connection has ended already.
   */
  request(command: Command): Promise<Response> {
    if (this.#lost !== undefined) return Promise.reject(this.#lost);
    const requestId = this.#nextRequestId++;
    const response = new Promise<Response>((resolve, reject) => {
      this.#pending.set(requestId, { resolve, reject });
    });
    try {
      this.#ws.send(toBinary(RequestSchema, create(RequestSchema, { requestId, command })));
    } catch (error) {
      this.#pending.delete(requestId);
      return Promise.reject(new ConnectionClosedError(1006, `cannot send: ${String(error)}`));
    }
    return response.then((answer) => {
      if (answer.result.case === "error") throw FeedgateError.fromMessage(answer.result.value);
      return answer;
    });
  }

  /** Ends the connection as if it had dropped with `error`: waiting requests reject with it and
   * `onLost` reports it. */
  abort(error: FeedgateError): void {
    this.#lose(error);
    this.#closeSocket(NORMAL_CLOSURE, "client gave up on the connection");
  }

  /** Ends the connection without reporting it (the owner knows): waiting requests reject with
   * `error`. Resolves when the server answered the close, or after `CLOSE_TIMEOUT_MS`. */
  async close(error: FeedgateError, reason = "client closed"): Promise<void> {
    this.#reporting = false;
    this.#lose(error);
    this.#closeSocket(NORMAL_CLOSURE, reason);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_TIMEOUT_MS)));
    await Promise.race([this.#gone, timeout]);
    clearTimeout(timer);
  }

  #closeSocket(code: number, reason: string): void {
    const state = this.#ws.readyState;
    if (state !== this.#ws.CLOSED && state !== this.#ws.CLOSING) {
      this.#ws.close(code, reason);
    }
  }

  #lose(error: FeedgateError): void {
    if (this.#lost !== undefined) return;
    this.#lost = error;
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
    if (this.#reporting) this.#handlers.onLost(this, error);
  }

  #receive(data: unknown): void {
    if (this.#lost !== undefined) return;
    let message: ServerMessage;
    try {
      if (!(data instanceof ArrayBuffer)) throw new TypeError("the server sent a text frame");
      message = fromBinary(ServerMessageSchema, new Uint8Array(data));
    } catch (error) {
      // A frame this client cannot read: the stream can no longer be trusted.
      this.#lose(new FeedgateError(ErrorCode.INVALID_MESSAGE, `undecodable server message: ${String(error)}`));
      this.#closeSocket(UNDECODABLE_CLOSURE, "undecodable server message");
      return;
    }
    this.#handle(message);
  }

  #handle(message: ServerMessage): void {
    switch (message.message.case) {
      case "response": {
        const response = message.message.value;
        const pending = this.#pending.get(response.requestId);
        if (pending !== undefined) {
          this.#pending.delete(response.requestId);
          pending.resolve(response);
        }
        break;
      }
      case "event":
        this.#handlers.onEvent(message.message.value);
        break;
      case "bundle":
        // Several messages in one frame (Hello.bundles), each as if it had come alone.
        for (const inner of message.message.value.messages) this.#handle(inner);
        break;
    }
  }
}
