/**
 * feedgate for browsers and Node: PostgreSQL changefeeds and broker topics over one WebSocket.
 *
 * ```ts
 * const client = await Client.connect("ws://127.0.0.1:8080/v1/ws");
 * const view = await client.materializedView("public.items");
 * await view.waitReady();
 * console.log(view.rows);
 * ```
 *
 * `pb` holds the generated protocol types (from proto/feedgate/v1/feedgate.proto); events are
 * those (`pb.Event`). Protocol reference: docs/protocol.md in the feedgate repository.
 */

export {
  Client,
  type ConnectOptions,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_QUEUE_SIZE,
  type PublishOptions,
  type SubscribeOptions,
  type TableOptions,
  type TopicOptions,
} from "./client.js";
export type { WebSocketConstructor } from "./connection.js";
export {
  backoffDelay,
  type ConnectionState,
  DEFAULT_RECONNECT,
  type ReconnectOptions,
  type ReconnectPolicy,
  type StateChangeCallback,
  type TokenSource,
} from "./reconnect.js";
export { type EventCallback, Subscription } from "./subscription.js";
export { codeName, ConnectionClosedError, ErrorCode, FeedgateError } from "./errors.js";
export {
  allOf,
  anyOf,
  col,
  Filter,
  type FilterValue,
  header,
  key,
  type Numeric,
  numeric,
  Operand,
  path,
} from "./filters.js";
export { type Json, type JsValue, type Key, keyOf, rowToObject, valueToJs } from "./values.js";
export {
  type ChangeCallback,
  type ChangeKindName,
  MaterializedView,
  type ResetCallback,
  type ViewChange,
  type ViewOptions,
} from "./view.js";
export {
  type Catalog,
  type CatalogColumn,
  type CatalogTable,
  ChangeKind,
  type Event,
  type Published,
  type Row,
  type RowChange,
  TopicBackend,
  type TopicMessage,
  type TopicRoute,
  type Value,
  ValueKind,
  type Welcome,
} from "./gen/feedgate/v1/feedgate_pb.js";
export * as pb from "./gen/feedgate/v1/feedgate_pb.js";
