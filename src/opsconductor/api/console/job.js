// One job: its run form (for who may run it), recent runs, versions, schedules with their
// next fire times, and webhooks (ids and paths: the signing secret is shown once, at
// creation, and never again).

import { call, can, segment } from "./api.js";
import { badge, el, notice, replace, table, time } from "./dom.js";
import { runForm } from "./runform.js";

const RUNS_SHOWN = 20;

function runRow(x) {
  return el(
    "tr",
    {},
    el("td", {}, el("a", { href: `#/executions/${segment(x.id)}` }, x.id.slice(0, 8))),
    el("td", {}, x.job_version ? `v${x.job_version}` : "—"),
    el("td", {}, badge(x.status)),
    el("td", {}, x.actor_id),
    el("td", {}, time(x.created_at)),
  );
}

function versionRow(v) {
  const params = Object.keys(v.params).sort();
  return el(
    "tr",
    {},
    el("td", {}, `v${v.version}`),
    el("td", {}, v.plan_name),
    el("td", {}, params.length ? el("code", {}, params.join(", ")) : el("span", { class: "muted" }, "none")),
    el("td", {}, el("code", { title: v.content_hash }, v.content_hash.slice(0, 12))),
    el("td", {}, v.created_by),
    el("td", {}, time(v.created_at)),
  );
}

function scheduleRow(s) {
  const next = s.paused
    ? el("span", { class: "muted" }, "none while paused")
    : el("ul", { class: "plain" }, s.upcoming.slice(0, 3).map((at) => el("li", {}, time(at))));
  return el(
    "tr",
    {},
    el("td", {}, s.name),
    el("td", {}, s.job_version === null ? "latest at each fire" : `v${s.job_version}`),
    el("td", {}, el("code", {}, s.cron), ` (${s.timezone})`),
    el("td", {}, s.paused ? badge("paused") : badge("active")),
    el("td", {}, next),
    el("td", {}, s.missed === "run_once" ? "run once" : "skip"),
    el("td", {}, s.last_execution_id ? el("a", { href: `#/executions/${segment(s.last_execution_id)}` }, time(s.last_slot)) : time(s.last_slot)),
  );
}

function hookRow(h) {
  return el(
    "tr",
    {},
    el("td", {}, el("code", {}, h.id)),
    el("td", {}, el("code", {}, h.path)),
    el("td", {}, h.job_version === null ? "latest at each delivery" : `v${h.job_version}`),
    el("td", {}, Object.keys(h.mapping).length ? el("code", {}, Object.entries(h.mapping).map(([k, v]) => `${k} ← ${v}`).join(", ")) : "—"),
    el("td", {}, h.created_by),
    el("td", {}, time(h.created_at)),
  );
}

/** A titled table filled by `load()`; an error or an empty answer is said in its place. */
function section(ctx, title, headers, load, row, emptyText) {
  const id = `job-${title.toLowerCase().replace(/\W+/g, "-")}`;
  // The table is its own (scrollable) region: named apart from the section's heading.
  const { wrapper, body } = table(`${title} (table)`, headers, []);
  const said = el("div");
  load()
    .then((rows) => {
      replace(body, rows.map(row));
      wrapper.hidden = !rows.length;
      if (!rows.length) replace(said, el("p", { class: "muted" }, emptyText));
    })
    .catch((error) => {
      if (!ctx.signal.aborted) replace(said, notice("error", error.message));
    });
  return el("section", { class: "job-part", "aria-labelledby": id }, el("h2", { id }, title), wrapper, said);
}

export function view(ctx, name) {
  const heading = el("h1", { tabindex: "-1", id: "job-heading" }, `Job ${name}`);
  const crumbs = el("p", { class: "crumbs" }, el("a", { href: "#/jobs" }, "← All jobs"));
  const summary = el("p", {});
  const feedback = el("div", { class: "feedback" });
  const runPanel = el("section", { class: "panel", "aria-labelledby": "run-heading" }, el("h2", { id: "run-heading" }, "Run"));
  const signal = ctx.signal;
  const path = `/jobs/${segment(name)}`;

  call(path, { signal })
    .then((job) => {
      replace(summary, `Plan “${job.version.plan_name}”, latest version v${job.latest_version}, saved by `, el("strong", {}, job.version.created_by), " at ", time(job.version.created_at), ".");
    })
    .catch((error) => {
      if (!signal.aborted) replace(feedback, notice("error", error.message));
    });

  // The form only for who may run it: the server checks again on every run.
  if (can(ctx.me, "jobs:run") && can(ctx.me, "executions:submit")) {
    call(`${path}/form`, { signal })
      .then((form) => runPanel.append(runForm(ctx, form)))
      .catch((error) => {
        if (!signal.aborted) runPanel.append(notice("error", error.message));
      });
  } else {
    runPanel.append(el("p", { class: "muted", id: "run-not-allowed" }, "Running a job needs the jobs:run and executions:submit permissions (the operator role has them); you can see it, not run it."));
  }

  const node = el(
    "section",
    { "aria-labelledby": "job-heading" },
    crumbs,
    heading,
    summary,
    feedback,
    runPanel,
    section(ctx, "Recent runs", ["Execution", "Version", "Status", "Requested by", "Created"], () => call(`${path}/runs`, { query: { limit: RUNS_SHOWN }, signal }), runRow, "Not run yet."),
    section(ctx, "Versions", ["Version", "Plan", "Parameters", "Content hash", "Saved by", "Saved at"], () => call(`${path}/versions`, { signal }), versionRow, "No version."),
    section(
      ctx,
      "Schedules",
      ["Schedule", "Runs", "Cron", "State", "Next fires", "Missed slots", "Last fired"],
      async () => (await call("/schedules", { signal })).filter((s) => s.job === name),
      scheduleRow,
      "No schedule: add one with opsc schedules add.",
    ),
    section(ctx, "Webhooks", ["Id", "Senders POST to", "Runs", "Mapping", "Created by", "Created"], () => call(`${path}/hooks`, { signal }), hookRow, "No webhook: add one with opsc hooks add."),
  );
  return { title: `Job ${name}`, node };
}
