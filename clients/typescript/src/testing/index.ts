/**
 * `@feedgate/client/testing`: a real feedgate server for a test suite, and assertions on what
 * arrives, for node:test, Vitest or any runner whose failures are thrown errors.
 *
 * ```ts
 * import { after, before, test } from "node:test";
 * import * as fg from "@feedgate/client/testing";
 *
 * const feedgate = fg.useFeedgate({ before, after }, { databaseUrl, watch: ["public.orders"] });
 *
 * test("an order reaches subscribers", async () => {
 *   const orders = await feedgate.client.subscribeTable("public.orders");
 *   await orders.ready;
 *   await placeOrder({ id: 7 });                                   // the application's own code
 *   await fg.expect(orders, { kind: "INSERT", where: { id: 7 } }, { within: 2_000 });
 *   await fg.expectNothing(orders, { for: 500 });
 * });
 * ```
 *
 * The server part (`startServer`, `useFeedgate`) needs Node; the assertions run anywhere the
 * client does. Guide: docs/testing-with-feedgate.md in the feedgate repository.
 */

export {
  type Check,
  DEFAULT_WITHIN_MS,
  expect,
  ExpectationFailed,
  type ExpectOptions,
  expectNothing,
  expectSequence,
  type NothingOptions,
  type Received,
  type Spec,
  type SpecLike,
} from "./expect.js";
export type { Kind, Row } from "./events.js";
export { type Condition, type ExpectedRows, type Rows, rowsDiff, waitUntil, type WaitOptions } from "./views.js";
export { findBinary, Server, ServerError, type ServerOptions, startServer } from "./server.js";
export { type Feedgate, type FeedgateOptions, type Hooks, useFeedgate, withServerLog } from "./hooks.js";
export type { TomlTable, TomlValue } from "./toml.js";
