// Building DOM safely: text always goes in as text nodes, never as markup.

/**
 * Create an element. `props`: attributes (set with setAttribute), plus `class`, `text`
 * (textContent) and `on<event>` listeners. Children: nodes or strings (as text).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

/** Append nodes or strings (as text nodes); skips null, undefined and false. */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Replace a node's children. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

const pad = (n) => String(n).padStart(2, "0");

/** A `<time>` showing an ISO timestamp as local `YYYY-MM-DD HH:MM:SS`; "—" when absent. */
export function time(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  const d = new Date(iso);
  const text =
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return el("time", { datetime: iso }, text);
}

/** `12.3 s`, `4 min 5 s`, `2 h 3 min`. */
export function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 60) return `${value < 10 ? value.toFixed(1) : Math.round(value)} s`;
  const minutes = Math.floor(value / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(value % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Seconds between two ISO timestamps, or null. */
export function between(start, end) {
  if (!start || !end) return null;
  return (new Date(end) - new Date(start)) / 1000;
}

/** A status badge: the word itself carries the meaning, colour only helps. */
export function badge(status) {
  return el("span", { class: `badge status-${String(status).replace(/[^a-z_]/g, "")}` }, status);
}

/** The execution's status badge, and a second one when it was record-only: a dark launch
 *  ends "completed" without touching anything and must not pass for a real change. */
export function executionBadges(execution) {
  const marks = [badge(execution.status)];
  if (execution.record_only) {
    marks.push(
      el("span", { class: "badge record-only", title: "Record-only: no target was touched" }, "record-only"),
    );
  }
  return marks;
}

/** An error/notice box; `role=alert` so screen readers hear it when it appears. */
export function notice(kind, ...children) {
  return el("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, children);
}

/** A table in a focusable, labelled scroll container (usable by keyboard when it overflows). */
export function table(caption, headers, rows) {
  const head = el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h))));
  const body = el("tbody", {}, rows);
  const node = el("table", {}, el("caption", {}, caption), head, body);
  return { wrapper: el("div", { class: "table-scroll", tabindex: "0", role: "region", "aria-label": caption }, node), body };
}
