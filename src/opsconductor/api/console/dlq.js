// The dead-letter queue: executions that ran out of attempts, and putting them back.

import { call, can, segment } from "./api.js";
import { badge, el, notice, replace, table, time } from "./dom.js";

export function view(ctx) {
  const heading = el("h1", { tabindex: "-1", id: "dlq-heading" }, "Dead letters");
  const feedback = el("div", { class: "feedback" });
  const showAll = el("input", { type: "checkbox", id: "dlq-all" });
  const { wrapper, body } = table(
    "Executions that ran out of attempts",
    ["Plan", "Status", "Failure", "Attempts", "Failed", "Requeue"],
    [],
  );
  const empty = el("p", { class: "muted", hidden: true }, "The dead-letter queue is empty.");
  const mayRequeue = can(ctx.me, "executions:requeue");

  function requeueCell(entry) {
    if (entry.requeued) return el("span", {}, `requeued by ${entry.requeued_by} at `, time(entry.requeued_at));
    if (!mayRequeue) return el("span", { class: "muted" }, "—");
    const button = el("button", { type: "button", "aria-label": `Requeue ${entry.plan_name}` }, "Requeue");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await call(`/dlq/${segment(entry.execution_id)}/requeue`, { method: "POST" });
        replace(feedback, notice("success", `Requeued “${entry.plan_name}”: it runs again with a fresh attempt budget.`));
        await load();
      } catch (error) {
        replace(feedback, notice("error", error.message));
        button.disabled = false;
      }
    });
    return button;
  }

  function row(entry) {
    const link = el("a", { href: `#/executions/${segment(entry.execution_id)}` }, entry.plan_name);
    return el(
      "tr",
      {},
      el("td", {}, link),
      el("td", {}, badge(entry.status)),
      el("td", {}, entry.failure_reason),
      el("td", {}, String(entry.attempt_count)),
      el("td", {}, time(entry.failed_at)),
      el("td", {}, requeueCell(entry)),
    );
  }

  async function load() {
    const entries = await call("/dlq", { query: { include_requeued: showAll.checked, limit: 500 }, signal: ctx.signal });
    replace(body, entries.map(row));
    empty.hidden = entries.length > 0;
  }

  const guarded = () =>
    load().catch((error) => {
      if (!ctx.signal.aborted) replace(feedback, notice("error", error.message));
    });
  showAll.addEventListener("change", guarded);
  guarded();

  const node = el(
    "section",
    { "aria-labelledby": "dlq-heading" },
    heading,
    el("p", { class: "help" }, "An execution lands here when its queue attempts run out (a worker kept dying or losing its lease). Requeueing gives it a fresh attempt budget."),
    el("div", { class: "checkbox" }, showAll, el("label", { for: "dlq-all" }, "Also show requeued entries")),
    feedback,
    wrapper,
    empty,
  );
  return { title: "Dead letters", node };
}
