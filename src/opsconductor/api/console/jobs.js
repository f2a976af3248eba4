// The tenant's jobs: saved, versioned plans run by name (`opsc jobs save` makes them).

import { call, segment } from "./api.js";
import { badge, el, notice, replace, table, time } from "./dom.js";

function row(job) {
  const last = job.last_run_id
    ? el("a", { href: `#/executions/${segment(job.last_run_id)}`, "aria-label": `Last run of ${job.name}: ${job.last_run_status}` }, badge(job.last_run_status))
    : el("span", { class: "muted" }, "never run");
  return el(
    "tr",
    {},
    el("td", {}, el("a", { href: `#/jobs/${segment(job.name)}` }, job.name)),
    el("td", {}, `v${job.latest_version}`),
    el("td", {}, job.plan_name),
    el("td", {}, last, " ", job.last_run_at ? time(job.last_run_at) : null),
    el("td", {}, String(job.schedules)),
    el("td", {}, time(job.updated_at)),
  );
}

export function view(ctx) {
  const heading = el("h1", { tabindex: "-1", id: "jobs-heading" }, "Jobs");
  const feedback = el("div", { class: "feedback" });
  const { wrapper, body } = table("The tenant's jobs", ["Job", "Latest version", "Plan", "Last run", "Schedules", "Updated"], []);
  const empty = el("p", { class: "muted", hidden: true }, "No job yet: save one with ", el("code", {}, "opsc jobs save NAME plan.yaml"), ".");
  call("/jobs", { signal: ctx.signal })
    .then((jobs) => {
      replace(body, jobs.map(row));
      empty.hidden = jobs.length > 0;
    })
    .catch((error) => {
      if (!ctx.signal.aborted) replace(feedback, notice("error", error.message));
    });
  const node = el(
    "section",
    { "aria-labelledby": "jobs-heading" },
    heading,
    el("p", { class: "help" }, "Saved plans with their parameters. Open a job to see its versions, runs, schedules and webhooks, and to run it."),
    feedback,
    wrapper,
    empty,
  );
  return { title: "Jobs", node };
}
