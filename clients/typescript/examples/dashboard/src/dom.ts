/** A few DOM helpers: the dashboard uses no framework. */

type Attributes = Record<string, string | number | boolean | undefined>;
type Child = Node | string | undefined | null | false;

/** `<tag attr=...>children</tag>`; attributes that are `false` or undefined are left out,
 * `true` ones are set empty; `text` sets the text content. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child);
  }
  return node;
}

/** The element with this id; throws when the page lacks it (a bug in index.html). */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (node === null) throw new Error(`the page has no #${id}`);
  return node as T;
}

/** `n` with thousands separators. */
export function count(n: number | bigint): string {
  return n.toLocaleString("en-US");
}

/** Calls `render` at most once per animation frame, however often `schedule` is called. */
export function frameThrottle(render: () => void): () => void {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  };
}

/** Arrow-key navigation within a list of buttons: ↑/↓ (and Home/End) move the focus. */
export function arrowKeys(list: HTMLElement): void {
  list.addEventListener("keydown", (event) => {
    const items = Array.from(list.querySelectorAll<HTMLElement>("button"));
    const at = items.indexOf(document.activeElement as HTMLElement);
    if (at < 0) return;
    const moves: Record<string, number> = {
      ArrowDown: Math.min(at + 1, items.length - 1),
      ArrowUp: Math.max(at - 1, 0),
      Home: 0,
      End: items.length - 1,
    };
    const next = moves[event.key];
    if (next === undefined) return;
    event.preventDefault();
    items[next]?.focus();
  });
}
