// The executions list: filters (status, actor), newest first, refreshed live.

import { call } from "./api.js";
import { el, executionBadges, notice, replace, table, time } from "./dom.js";
import { watchTenant } from "./live.js";

export const STATUSES = [
  "pending_approval",
  "approved",
  "queued",
  "running",
  "completed",
  "failed",
  "partial",
  "timeout",
  "cancelled",
  "rejected",
];

const PAGE = 50;

function filterForm(params, navigate) {
  const status = el(
    "select",
    { id: "filter-status", name: "status" },
    el("option", { value: "" }, "any status"),
    STATUSES.map((s) => el("option", { value: s, selected: params.get("status") === s }, s)),
  );
  const actor = el("input", {
    id: "filter-actor",
    name: "actor",
    type: "text",
    autocomplete: "off",
    value: params.get("actor") ?? "",
  });
  const form = el(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter executions" },
    el("div", { class: "field" }, el("label", { for: "filter-status" }, "Status"), status),
    el("div", { class: "field" }, el("label", { for: "filter-actor" }, "Actor"), actor),
    el("button", { type: "submit" }, "Apply filters"),
    el("button", { type: "button", class: "secondary", onclick: () => navigate("#/executions") }, "Clear"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (status.value) query.set("status", status.value);
    if (actor.value.trim()) query.set("actor", actor.value.trim());
    const suffix = query.toString();
    navigate(suffix ? `#/executions?${suffix}` : "#/executions");
  });
  return form;
}

function row(execution) {
  const link = el("a", { href: `#/executions/${encodeURIComponent(execution.id)}` }, execution.plan_name);
  return el(
    "tr",
    {},
    el("td", {}, link, el("div", { class: "muted mono small" }, execution.id.slice(0, 8))),
    el("td", {}, executionBadges(execution)),
    el("td", {}, execution.actor_id),
    el("td", {}, `${execution.mode} · ${execution.sla_class}`),
    el("td", {}, String(execution.approval_level)),
    el("td", {}, time(execution.created_at)),
    el("td", {}, time(execution.finished_at)),
  );
}

export function view(ctx, params) {
  const heading = el("h1", { tabindex: "-1" }, "Executions");
  const feedback = el("div", { class: "feedback" });
  const updated = el("p", { class: "muted small", "aria-live": "off" });
  const caption = params.toString() ? "Executions matching the filters, newest first" : "Executions, newest first";
  const { wrapper, body } = table(caption, ["Plan", "Status", "Actor", "Mode", "Approval level", "Created", "Finished"], []);
  const more = el("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const empty = el("p", { class: "muted", hidden: true }, "No executions match.");
  let shown = 0;
  let nextCursor = null;
  const filters = { status: params.get("status"), actor: params.get("actor") };

  async function load({ cursor = null, limit = PAGE } = {}) {
    const page = await call("/executions", { query: { ...filters, limit, cursor }, signal: ctx.signal });
    const rows = page.items.map(row);
    if (cursor) append(rows);
    else {
      replace(body, rows);
      shown = 0;
    }
    shown += rows.length;
    nextCursor = page.next_cursor;
    more.hidden = !nextCursor;
    empty.hidden = shown > 0;
    replace(updated, "Updated ", time(new Date().toISOString()), " · refreshes automatically");
    replace(feedback);
  }
  const append = (rows) => body.append(...rows);

  async function guarded(work) {
    try {
      await work();
    } catch (error) {
      if (!ctx.signal.aborted && error.name !== "AbortError") replace(feedback, notice("error", error.message));
    }
  }

  more.addEventListener("click", () => guarded(() => load({ cursor: nextCursor })));
  guarded(() => load());
  watchTenant(() => guarded(() => load({ limit: Math.min(Math.max(shown, PAGE), 500) })), ctx);

  const node = el("section", { "aria-labelledby": "executions-heading" }, heading, filterForm(params, ctx.navigate), feedback, updated, wrapper, empty, more);
  heading.id = "executions-heading";
  return { title: "Executions", node };
}
