// The step × target matrix of an execution: one row per step, one small cell per target
// coloured by the status of its latest attempt, counts per step, a filter by status, and
// the failed targets with their standard error in plain sight. Built to stay compact at
// hundreds of targets (cells wrap; no row per target), and re-rendered on every live update
// keeping the filter and the selected cell.

import { badge, el, replace, seconds, between } from "./dom.js";

/** Statuses in the order counts and filters show them. */
const ORDER = ["failed", "timeout", "running", "pending", "completed", "skipped", "cancelled"];
const FAILED = new Set(["failed", "timeout"]);
/** Failed targets listed with their stderr; the grouped failures cover the rest. */
const LISTED = 50;
const TAIL = 6;

/** The newest attempt of every (step, target), by step index. */
function latestByStep(attempts) {
  const newest = new Map();
  for (const a of attempts) {
    const key = `${a.step_index}|${a.target_asset_id}`;
    const seen = newest.get(key);
    if (!seen || a.attempt > seen.attempt) newest.set(key, a);
  }
  const steps = new Map();
  for (const a of newest.values()) {
    if (!steps.has(a.step_index)) steps.set(a.step_index, []);
    steps.get(a.step_index).push(a);
  }
  const natural = new Intl.Collator(undefined, { numeric: true });
  for (const list of steps.values()) list.sort((p, q) => natural.compare(p.target_asset_id, q.target_asset_id));
  return [...steps.entries()].sort((p, q) => p[0] - q[0]);
}

function countsOf(attempts) {
  const counts = {};
  for (const a of attempts) counts[a.status] = (counts[a.status] ?? 0) + 1;
  return counts;
}

function countText(counts) {
  return ORDER.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(" · ");
}

const lastLines = (text, n) => text.split("\n").filter((l) => l.trim()).slice(-n).join("\n");

/** One attempt in full: what it ran into, its exit, its output and stderr. */
function attemptDetail(a, stepName) {
  return el(
    "div",
    { class: "cell-detail" },
    el("h3", {}, `${a.target_asset_id} · step ${a.step_index + 1} “${stepName}”`),
    el(
      "p",
      {},
      badge(a.status),
      ` attempt ${a.attempt}`,
      a.exit_code === null ? "" : ` · exit ${a.exit_code}`,
      ` · ${seconds(between(a.started_at, a.finished_at))}`,
      a.error ? el("span", { class: "step-error" }, ` — ${a.error}`) : null,
    ),
    a.output ? [el("h4", {}, "Output"), el("pre", { class: "output", tabindex: "0" }, a.output)] : null,
    a.stderr ? [el("h4", {}, "Standard error"), el("pre", { class: "output", tabindex: "0" }, a.stderr)] : null,
  );
}

export function matrixView() {
  let filter = "all";
  let selected = null; // "step|target"
  let last = null;
  const filters = el("div", { class: "matrix-filters", role: "group", "aria-label": "Show targets by status" });
  const grid = el("div", { class: "matrix" });
  const detail = el("div", { "aria-live": "polite" });
  const failedList = el("div");
  const node = el("div", {}, filters, grid, detail, failedList);

  grid.addEventListener("keydown", (event) => {
    const cell = event.target.closest?.(".cell");
    if (!cell) return;
    const row = [...cell.parentElement.children];
    const at = row.indexOf(cell);
    const step = { ArrowRight: 1, ArrowLeft: -1, Home: -at, End: row.length - 1 - at }[event.key];
    if (step === undefined) return;
    event.preventDefault();
    row[Math.max(0, Math.min(row.length - 1, at + step))].focus();
  });

  function pick(key) {
    selected = selected === key ? null : key;
    if (last) update(last);
  }

  function setFilter(value) {
    filter = value;
    if (last) update(last);
  }

  function update(x) {
    last = x;
    const names = new Map((x.plan?.steps ?? []).map((s, i) => [i, s.name]));
    const steps = latestByStep(x.steps);
    const all = steps.flatMap(([, list]) => list);
    const total = countsOf(all);

    const choices = ["all", ...ORDER.filter((s) => total[s])];
    if (!choices.includes(filter)) choices.push(filter);
    replace(
      filters,
      el("span", { class: "filter-label" }, "Show:"),
      choices.map((s) =>
        el(
          "button",
          {
            type: "button",
            class: `secondary filter${s === filter ? " on" : ""}`,
            "aria-pressed": String(s === filter),
            onclick: () => setFilter(s),
          },
          s === "all" ? `all (${all.length})` : `${s} (${total[s] ?? 0})`,
        ),
      ),
    );

    const shown = (a) => filter === "all" || a.status === filter;
    // Live updates rebuild the grid: keep keyboard focus on the same cell across them.
    const focused = grid.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    replace(
      grid,
      steps.map(([index, list]) => {
        const name = names.get(index) ?? list[0]?.step_name ?? `step ${index + 1}`;
        const visible = list.filter(shown);
        return el(
          "section",
          { class: "matrix-row", "aria-label": `Step ${index + 1} ${name}` },
          el(
            "h3",
            { class: "matrix-step" },
            `${index + 1}. ${name}`,
            el("span", { class: "muted small" }, ` — ${list.length} target${list.length === 1 ? "" : "s"}: ${countText(countsOf(list))}`),
          ),
          visible.length
            ? el(
                "div",
                { class: "cells" },
                visible.map((a, n) => {
                  const key = `${index}|${a.target_asset_id}`;
                  return el("button", {
                    type: "button",
                    // one tab stop per step; the arrow keys move between its cells
                    tabindex: n === 0 ? "0" : "-1",
                    "data-key": key,
                    class: `cell status-${a.status}${key === selected ? " selected" : ""}`,
                    title: `${a.target_asset_id}: ${a.status}`,
                    "aria-label": `${a.target_asset_id}, step ${index + 1}: ${a.status}`,
                    "aria-pressed": String(key === selected),
                    "data-target": a.target_asset_id,
                    "data-status": a.status,
                    onclick: () => pick(key),
                  });
                }),
              )
            : el("p", { class: "muted small" }, `No ${filter} target in this step.`),
        );
      }),
    );

    if (focused) grid.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();

    const chosen = selected && all.find((a) => `${a.step_index}|${a.target_asset_id}` === selected);
    replace(detail, chosen ? attemptDetail(chosen, names.get(chosen.step_index) ?? chosen.step_name) : null);

    // Failed targets, each with the end of its stderr: no expander to open per host.
    const failed = all.filter((a) => FAILED.has(a.status) && (filter === "all" || filter === a.status));
    replace(
      failedList,
      failed.length
        ? [
            el("h3", { id: "failed-targets-heading" }, `Failed targets (${failed.length})`),
            el(
              "ul",
              { class: "failed-targets", "aria-labelledby": "failed-targets-heading" },
              failed.slice(0, LISTED).map((a) =>
                el(
                  "li",
                  {},
                  el("strong", {}, a.target_asset_id),
                  ` — step ${a.step_index + 1} “${names.get(a.step_index) ?? a.step_name}”: `,
                  a.error ?? a.status,
                  a.stderr ? el("pre", { class: "output stderr-tail", "aria-label": `Standard error of ${a.target_asset_id}` }, lastLines(a.stderr, TAIL)) : null,
                ),
              ),
            ),
            failed.length > LISTED
              ? el("p", { class: "muted" }, `… and ${failed.length - LISTED} more: see the failures grouped by message above, or pick a cell.`)
              : null,
          ]
        : null,
    );
  }

  return { node, update };
}
