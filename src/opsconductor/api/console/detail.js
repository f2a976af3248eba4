// One execution, live: status, progress, approval / cancel actions, steps with their
// (server-masked) output, and the event timeline.

import { ApiError, call, can, segment } from "./api.js";
import { badge, between, el, executionBadges, notice, replace, seconds, table, time } from "./dom.js";
import { TERMINAL, followExecution } from "./live.js";
import { matrixView } from "./matrix.js";

const LEVELS = { 0: "auto", 1: "confirm", 2: "plan review", 3: "step-by-step" };

// -- the summary ---------------------------------------------------------------------------

function summaryList(x) {
  const items = [
    ["Execution id", el("code", {}, x.id)],
    ["Requested by", x.actor_id],
    ["Tenant", x.tenant_id],
    ["Mode · SLA class", `${x.mode} · ${x.sla_class} (estimated ${seconds(x.estimated_duration_s)})`],
    ["Approval level", `${x.approval_level} (${LEVELS[x.approval_level] ?? "?"})`],
    ["Priority", String(x.priority)],
    ["Plan hash", el("code", { class: "hash" }, x.plan_hash)],
    ["Idempotency key", el("code", {}, x.idempotency_key)],
    ["Trace id", el("code", {}, x.trace_id)],
    ["Worker", x.worker_id ?? "—"],
    ["Created", time(x.created_at)],
    ["Started", time(x.started_at)],
    ["Finished", time(x.finished_at)],
  ];
  if (x.cancelled_by) items.push(["Cancelled by", x.cancelled_by], ["Cancelled at", time(x.cancelled_at)]);
  if (x.retry_of) {
    items.push(["Retry of", el("a", { href: `#/executions/${segment(x.retry_of)}` }, x.retry_of)]);
  }
  if (x.rerun_of) {
    items.push(["Re-runs the failed of", el("a", { href: `#/executions/${segment(x.rerun_of)}` }, x.rerun_of)]);
  }
  if (x.job_name) {
    items.push(["Job", [el("a", { href: `#/jobs/${segment(x.job_name)}` }, x.job_name), ` version ${x.job_version}`]]);
  }
  if (x.record_only) items.push(["Record-only", "yes: no target was touched"]);
  return el("dl", { class: "summary" }, items.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function planBlock(plan) {
  return el("pre", { class: "plan", tabindex: "0", "aria-label": "Plan as JSON" }, JSON.stringify(plan, null, 2));
}

function progressText(p) {
  const parts = [`${p.done} of ${p.total} done`];
  if (p.failed) parts.push(`${p.failed} failed`);
  if (p.running) parts.push(`${p.running} running`);
  if (p.pending) parts.push(`${p.pending} pending`);
  if (p.skipped) parts.push(`${p.skipped} skipped`);
  if (p.running + p.pending > 0) {
    // Only from what the same steps took before; else said to be unknown, never guessed.
    parts.push(p.eta_s === null || p.eta_s === undefined ? "time left unknown" : `about ${seconds(p.eta_s)} left`);
  }
  return `${parts.join(" · ")} (${p.percent}%)`;
}

function etaBasis(p) {
  if (!p.eta_basis || p.running + p.pending === 0) return "";
  return p.eta_s === null || p.eta_s === undefined
    ? `No estimate: ${p.eta_basis.replace(/^unknown: /, "")}.`
    : `Estimate from the ${p.eta_basis}.`;
}

// -- failures: failed targets grouped by step, cause and last line of stderr ----------------

const NAMES_SHOWN = 10;

function failureItem(f) {
  const names = f.targets.slice(0, NAMES_SHOWN).join(", ") + (f.count > NAMES_SHOWN ? `, … (+${f.count - NAMES_SHOWN})` : "");
  return el(
    "li",
    {},
    el("strong", {}, `step ${f.step_index + 1} “${f.step_name}”: ${f.message}`),
    ` ×${f.count}: ${names}`,
    f.tail.length ? el("pre", { class: "output", tabindex: "0", "aria-label": "Last lines of standard error" }, f.tail.join("\n")) : null,
  );
}

function failureList(failures) {
  return failures?.length ? el("ul", { class: "failures" }, failures.map(failureItem)) : null;
}

// -- steps ---------------------------------------------------------------------------------

/** Attempts beyond which the per-attempt table gives way to the matrix. */
const MAX_ROWS = 40;

const stepKey = (s) => `${s.step_index}|${s.target_asset_id}|${s.attempt}`;

function outputRow(step, openKeys) {
  const key = stepKey(step);
  const blocks = [];
  if (step.output) blocks.push(el("h4", {}, "Output"), el("pre", { class: "output", tabindex: "0" }, step.output));
  if (step.stderr) blocks.push(el("h4", {}, "Standard error"), el("pre", { class: "output", tabindex: "0" }, step.stderr));
  if (blocks.length === 0) return null;
  const details = el(
    "details",
    { open: openKeys.has(key) },
    el("summary", {}, `Output of “${step.step_name}” on ${step.target_asset_id} (attempt ${step.attempt})`),
    blocks,
  );
  details.addEventListener("toggle", () => (details.open ? openKeys.add(key) : openKeys.delete(key)));
  return el("tr", { class: "output-row" }, el("td", { colspan: "7" }, details));
}

function stepRows(steps, openKeys) {
  return steps.flatMap((s) => [
    el(
      "tr",
      {},
      el("td", {}, String(s.step_index + 1)),
      el("td", {}, s.step_name, s.error ? el("div", { class: "step-error" }, s.error) : null),
      el("td", {}, s.step_type),
      el("td", {}, s.target_asset_id),
      el("td", {}, badge(s.status)),
      el("td", {}, s.attempt > 1 ? `${s.attempt} (${s.retry_count} retries)` : String(s.attempt)),
      el("td", {}, s.exit_code === null ? "—" : String(s.exit_code), " · ", seconds(between(s.started_at, s.finished_at))),
    ),
    outputRow(s, openKeys),
  ]);
}

// -- events --------------------------------------------------------------------------------

function describe(ev) {
  const p = ev.payload ?? {};
  switch (ev.event_type) {
    case "submitted":
      return `submitted by ${ev.actor_id}`;
    case "status_changed":
      return `${ev.from_status ?? "—"} → ${ev.to_status} by ${ev.actor_id}${p.reason ? ` (${p.reason})` : ""}`;
    case "step_started":
      return `step ${p.step_index + 1} “${p.step}” started on ${p.target} (attempt ${p.attempt})`;
    case "step_finished":
      return (
        `step ${p.step_index + 1} “${p.step}” on ${p.target}: ${p.status}` +
        (p.exit_code === null || p.exit_code === undefined ? "" : `, exit ${p.exit_code}`) +
        (p.error ? ` — ${p.error}` : "")
      );
    case "approval_decision":
      return `${ev.actor_id}: ${p.decision} (${p.approvals} of ${p.needed})${p.comment ? ` — “${p.comment}”` : ""}`;
    case "approval_refused":
      return `${ev.actor_id}: ${p.decision} refused — ${p.detail}`;
    case "cancel_requested":
      return `cancel requested by ${ev.actor_id}`;
    case "step_output":
      return (
        `“${p.step}” on ${p.target} (${p.stream})` +
        (p.skipped ? ` — ${p.skipped} lines skipped` : "") +
        (p.truncated ? " — live output truncated" : "")
      );
    default: {
      const extra = Object.keys(p).length ? ` ${JSON.stringify(p)}` : "";
      return `${ev.event_type} by ${ev.actor_id}${extra}`;
    }
  }
}

function eventItem(ev) {
  // Output lines arrive masked; they are text nodes, never markup.
  const lines = ev.event_type === "step_output" && (ev.payload?.lines ?? []).length
    ? [el("pre", { class: "event-output" }, ev.payload.lines.join("\n"))]
    : [];
  return el("li", { "data-event-id": String(ev.id) }, time(ev.created_at), " ", el("span", { class: "event-type" }, ev.event_type), " ", describe(ev), ...lines);
}

// -- actions -------------------------------------------------------------------------------

function approvalPanel(x, ctx, act) {
  const level = x.approval_level;
  const sendsHash = level >= 2;
  const heading = el("h2", { id: "approval-heading" }, "Approval needed");
  if (sendsHash && x.actor_id === ctx.me.actor_id) {
    return el(
      "section",
      { class: "panel", "aria-labelledby": "approval-heading" },
      heading,
      el("p", {}, `You requested this execution. Level ${level} (${LEVELS[level]}) needs another approver (separation of duties).`),
    );
  }
  const comment = el("textarea", { id: "decision-comment", rows: "2", maxlength: "2000", "aria-describedby": "comment-help" });
  const approve = el("button", { type: "button" }, "Approve");
  const reject = el("button", { type: "button", class: "danger" }, "Reject");
  approve.addEventListener("click", () =>
    act(approve, async () => {
      const body = { comment: comment.value.trim() || null };
      if (sendsHash) body.plan_hash = x.plan_hash;
      await call(`/executions/${segment(x.id)}/approve`, { method: "POST", body });
      return "Approved.";
    }),
  );
  reject.addEventListener("click", () => {
    if (!comment.value.trim()) {
      comment.setAttribute("aria-invalid", "true");
      ctx.announce("A comment is required to reject.");
      comment.focus();
      return;
    }
    act(reject, async () => {
      await call(`/executions/${segment(x.id)}/reject`, { method: "POST", body: { comment: comment.value.trim() } });
      return "Rejected.";
    });
  });
  return el(
    "section",
    { class: "panel attention", "aria-labelledby": "approval-heading" },
    heading,
    el(
      "p",
      {},
      `Level ${level} (${LEVELS[level] ?? "?"}). `,
      sendsHash ? "Your approval is bound to this plan hash; it is refused if the plan changed:" : "Plan hash:",
    ),
    el("p", {}, el("code", { class: "hash", id: "review-hash" }, x.plan_hash)),
    el("h3", {}, "Plan under review"),
    el("p", {}, el("a", { href: "#/approvals" }, "Review it in the Approvals inbox"), ": the plan laid out as steps and targets, and what changed since the last run of this plan."),
    planBlock(x.plan),
    el("label", { for: "decision-comment" }, "Comment"),
    comment,
    el("p", { id: "comment-help", class: "help" }, "Optional to approve, required to reject."),
    el("div", { class: "buttons" }, approve, reject),
  );
}

function cancelPanel(x, act) {
  const start = el("button", { type: "button", class: "danger" }, "Cancel execution");
  const confirm = el("div", { class: "confirm", hidden: true, role: "group", "aria-labelledby": "cancel-question" });
  const yes = el("button", { type: "button", class: "danger" }, "Yes, cancel it");
  const no = el("button", { type: "button", class: "secondary" }, "No, keep it");
  const what = x.status === "running" ? "Running commands are stopped and its locks released." : "It will never run.";
  replace(confirm, el("p", { id: "cancel-question" }, `Cancel this execution? ${what}`), el("div", { class: "buttons" }, yes, no));
  start.addEventListener("click", () => {
    start.hidden = true;
    confirm.hidden = false;
    no.focus();
  });
  no.addEventListener("click", () => {
    confirm.hidden = true;
    start.hidden = false;
    start.focus();
  });
  yes.addEventListener("click", () =>
    act(yes, async () => {
      const done = await call(`/executions/${segment(x.id)}/cancel`, { method: "POST" });
      return done.outcome === "cancelled" ? "Cancelled." : "Cancel requested: stopping the running steps…";
    }),
  );
  return el("section", { class: "panel", "aria-labelledby": "cancel-heading" }, el("h2", { id: "cancel-heading" }, "Cancel"), start, confirm);
}

// -- the page ------------------------------------------------------------------------------

export function view(ctx, id) {
  const heading = el("h1", { tabindex: "-1" }, "Execution");
  const statusLine = el("p", { class: "status-line", id: "status-line", "aria-live": "polite", "aria-atomic": "true" }, "Loading…");
  const feedback = el("div", { class: "feedback" });
  const liveTrouble = el("div", { class: "feedback" });
  const bar = el("progress", { max: "100", value: "0", "aria-labelledby": "progress-text" });
  const barText = el("p", { id: "progress-text" });
  const barBasis = el("p", { id: "eta-basis", class: "muted small" });
  const actions = el("div", { class: "actions" });
  const summary = el("div");
  const steps = table("Step attempts (latest last)", ["#", "Step", "Type", "Target", "Status", "Attempt", "Exit · time"], []);
  const timeline = el("ol", { class: "timeline", role: "log", "aria-label": "Event timeline", tabindex: "0" });
  const matrix = matrixView();
  const stepsNote = el("p", { class: "muted", hidden: true });
  const failuresBody = el("div");
  const failuresSection = el(
    "section",
    { "aria-labelledby": "failures-heading", hidden: true },
    el("h2", { id: "failures-heading" }, "Failures"),
    failuresBody,
  );
  const openOutputs = new Set();
  let current = null;
  let actionsKey = null;

  async function act(button, work) {
    button.disabled = true;
    try {
      const said = await work();
      replace(feedback, notice("success", said));
      actionsKey = null;
      await refresh();
    } catch (error) {
      const code = error instanceof ApiError && error.code ? ` (${error.code})` : "";
      replace(feedback, notice("error", `${error.message}${code}`));
      button.disabled = false;
    }
  }

  function renderActions(x) {
    const approvable = x.status === "pending_approval" && can(ctx.me, "executions:approve");
    const cancellable = !TERMINAL.has(x.status) && can(ctx.me, "executions:cancel");
    const key = `${x.status}|${approvable}|${cancellable}`;
    if (key === actionsKey) return;
    actionsKey = key;
    replace(actions, approvable ? approvalPanel(x, ctx, act) : null, cancellable ? cancelPanel(x, act) : null);
  }

  function render(x) {
    current = x;
    replace(heading, x.plan_name);
    ctx.setTitle(x.plan_name);
    const said = `${x.status}|${x.status_reason ?? ""}`;
    if (statusLine.dataset.said !== said) {
      statusLine.dataset.said = said;
      replace(statusLine, "Status: ", executionBadges(x), x.status_reason ? ` — ${x.status_reason}` : "");
    }
    bar.value = x.progress.percent;
    replace(barText, progressText(x.progress));
    replace(barBasis, etaBasis(x.progress));
    renderActions(x);
    replace(summary, summaryList(x), el("details", { class: "plan-details" }, el("summary", {}, "Plan"), planBlock(x.plan)));
    matrix.update(x);
    // A row per attempt is readable for a handful of targets, a wall at a fleet's scale:
    // there the matrix (a cell per target, its output on a click) stands in for it.
    const small = x.steps.length <= MAX_ROWS;
    steps.wrapper.hidden = !small;
    stepsNote.hidden = small;
    replace(stepsNote, `${x.steps.length} step attempts: too many for a table. Pick a cell of the matrix above for its output.`);
    replace(steps.body, small ? stepRows(x.steps, openOutputs) : null);
    const grouped = failureList(x.failures);
    failuresSection.hidden = !grouped;
    replace(failuresBody, grouped);
  }

  // GET /progress has the better ETA (observed durations of the same step types in the
  // tenant); a server without it leaves the detail's own progress.
  let progressEndpoint = true;
  async function observedProgress() {
    if (!progressEndpoint) return null;
    try {
      return await call(`/executions/${segment(id)}/progress`, { signal: ctx.signal });
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      progressEndpoint = false;
      return null;
    }
  }

  let refreshing = null;
  let again = false;
  async function refresh() {
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = (async () => {
      do {
        again = false;
        const [found, progress] = await Promise.all([
          call(`/executions/${segment(id)}`, { signal: ctx.signal }),
          observedProgress(),
        ]);
        render(progress ? { ...found, progress } : found);
      } while (again);
    })();
    try {
      await refreshing;
    } finally {
      refreshing = null;
    }
  }

  let lastEventId = 0;
  async function onBatch(events, status) {
    const fresh = events.filter((ev) => ev.id > lastEventId);
    if (fresh.length) lastEventId = fresh[fresh.length - 1].id;
    timeline.append(...fresh.map(eventItem));
    if (fresh.length || (status && status !== current?.status)) {
      refresh().catch((error) => {
        if (!ctx.signal.aborted && error.name !== "AbortError") replace(feedback, notice("error", error.message));
      });
    }
  }

  const trouble = (message) => replace(liveTrouble, message ? notice("warning", message) : null);

  (async () => {
    try {
      await refresh();
      await followExecution(id, 0, onBatch, { signal: ctx.signal, onTrouble: trouble });
      if (!ctx.signal.aborted) await refresh();
    } catch (error) {
      if (ctx.signal.aborted || error.name === "AbortError") return;
      const text = error instanceof ApiError && error.status === 404 ? `No execution ${id} in your tenant.` : error.message;
      replace(feedback, notice("error", text));
      replace(statusLine, "Status unknown");
    }
  })();

  heading.id = "detail-heading";
  const node = el(
    "article",
    { "aria-labelledby": "detail-heading" },
    el("p", { class: "crumbs" }, el("a", { href: "#/executions" }, "← All executions")),
    heading,
    statusLine,
    feedback,
    liveTrouble,
    el("section", { "aria-labelledby": "progress-heading", class: "progress" }, el("h2", { id: "progress-heading" }, "Progress"), bar, barText, barBasis),
    actions,
    failuresSection,
    el("section", { "aria-labelledby": "matrix-heading" }, el("h2", { id: "matrix-heading" }, "Targets by step"), matrix.node),
    el("section", { "aria-labelledby": "steps-heading" }, el("h2", { id: "steps-heading" }, "Steps"), stepsNote, steps.wrapper),
    el("section", { "aria-labelledby": "events-heading" }, el("h2", { id: "events-heading" }, "Events"), timeline),
    el("section", { "aria-labelledby": "summary-heading" }, el("h2", { id: "summary-heading" }, "Details"), summary),
  );
  return { title: "Execution", node };
}
