// The approvals inbox: every open approval of the tenant, soonest to expire first, with a
// live countdown, the plan laid out (steps, targets, what each runs), its hash, what
// changed since the last run of the same job (else the same plan name), and approve / reject.

import { ApiError, call, can, segment } from "./api.js";
import { el, notice, replace, time } from "./dom.js";
import { watchTenant } from "./live.js";

const LEVELS = { 1: "confirm", 2: "plan review", 3: "step-by-step" };
/** Under this many seconds left the countdown turns red. */
const SOON_S = 300;

function remaining(s) {
  if (s <= 0) return "Expired";
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  if (h) return `Expires in ${h} h ${m} min ${sec} s`;
  if (m) return `Expires in ${m} min ${sec} s`;
  return `Expires in ${sec} s`;
}

function stepItem(step) {
  const names = step.targets.length ? step.targets.join(", ") : "no target";
  return el(
    "li",
    {},
    el("strong", {}, step.name),
    ` — ${step.type}${step.action_class ? ` · ${step.action_class}` : ""} · on ${step.targets.length} target${step.targets.length === 1 ? "" : "s"}: `,
    el("span", { class: "mono small" }, names),
    step.work.map(([field, text]) => [el("div", { class: "small muted" }, field), el("pre", { tabindex: "0" }, text)]),
    step.settings.length ? el("div", { class: "small" }, step.settings.map(([k, v]) => `${k}: ${v}`).join(" · ")) : null,
  );
}

const MARK = { added: "+ ", removed: "− ", same: "  ", gap: "" };

/** Which earlier run the diff is against: the same job's last run, else the plan name's. */
function basis(item) {
  const x = item.execution;
  const p = item.previous;
  if (item.compared_with === "job") {
    const versions = p.job_version === x.job_version ? `version ${x.job_version}` : `version ${p.job_version}, now ${x.job_version}`;
    return ["Compared with the last run of job ", el("a", { href: `#/jobs/${segment(x.job_name)}` }, x.job_name), ` (${versions}), `];
  }
  const first = x.job_name ? `No earlier run of job ${x.job_name}; compared` : "Compared";
  return [`${first} with the last execution of this plan name, `];
}

function changes(item) {
  if (!item.previous) {
    const what = item.execution.job_name ? `run of job ${item.execution.job_name} or execution of this plan name` : "execution of this plan name";
    return el("p", { class: "muted" }, `No earlier ${what} to compare with.`);
  }
  const link = el("a", { href: `#/executions/${segment(item.previous.id)}` }, item.previous.id.slice(0, 8));
  const intro = [...basis(item), link, ` (${item.previous.status}, `, time(item.previous.created_at), ")"];
  if (!item.diff.length) return el("p", {}, ...intro, ": the same plan.");
  return [
    el("p", {}, ...intro, ":"),
    el(
      "ul",
      { class: "diff", "aria-label": "Changes since the last run" },
      item.diff.map((line) => el("li", { class: line.op }, MARK[line.op] ?? "", line.text)),
    ),
  ];
}

function itemView(item, ctx, { act, clock }) {
  const x = item.execution;
  const a = item.approval;
  const headingId = `approval-${a.id}`;
  const countdown = el("span", { class: "countdown", "data-expires": a.expires_at });
  clock.add(countdown);
  const stepPart = a.step_index === null ? "" : `/steps/${a.step_index}`;
  const sendsHash = a.level >= 2;
  const ownRequest = sendsHash && x.actor_id === ctx.me.actor_id;
  let decide = null;
  if (can(ctx.me, "executions:approve") && !ownRequest) {
    const comment = el("textarea", { id: `comment-${a.id}`, rows: "2", maxlength: "2000" });
    const approve = el("button", { type: "button" }, "Approve");
    const reject = el("button", { type: "button", class: "danger" }, "Reject");
    approve.addEventListener("click", () =>
      act(approve, async () => {
        const body = { comment: comment.value.trim() || null };
        if (sendsHash) body.plan_hash = a.plan_hash;
        await call(`/executions/${segment(x.id)}${stepPart}/approve`, { method: "POST", body });
        return `Approved “${x.plan_name}”.`;
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
        await call(`/executions/${segment(x.id)}${stepPart}/reject`, { method: "POST", body: { comment: comment.value.trim() } });
        return `Rejected “${x.plan_name}”.`;
      });
    });
    decide = [
      el("label", { for: `comment-${a.id}` }, "Comment (required to reject)"),
      comment,
      el("div", { class: "buttons" }, approve, reject),
    ];
  } else if (ownRequest) {
    decide = el("p", { class: "muted" }, "You requested it: another approver decides (separation of duties).");
  }
  return el(
    "section",
    { class: "panel inbox-item", "aria-labelledby": headingId },
    el("h2", { id: headingId }, el("a", { href: `#/executions/${segment(x.id)}` }, x.plan_name)),
    el(
      "p",
      {},
      countdown,
      " · requested by ",
      el("strong", {}, a.requested_by),
      " · ",
      time(x.created_at),
      ` · level ${a.level} (${LEVELS[a.level] ?? "?"})`,
      a.step_index === null ? "" : ` · step ${a.step_index + 1} only`,
    ),
    el("p", {}, sendsHash ? "Your approval is bound to this plan hash: " : "Plan hash: ", el("code", { class: "hash" }, a.plan_hash)),
    Object.keys(item.params).length
      ? el("p", {}, "Parameters: ", el("code", {}, Object.entries(item.params).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ")))
      : null,
    el("h3", {}, "Steps"),
    el("ol", { class: "review-steps" }, item.steps.map(stepItem)),
    el("h3", {}, "Changes"),
    changes(item),
    decide,
  );
}

export function view(ctx) {
  const heading = el("h1", { tabindex: "-1", id: "approvals-heading" }, "Approvals");
  const feedback = el("div", { class: "feedback" });
  const list = el("div");
  const empty = el("p", { class: "muted", hidden: true }, "Nothing waits for a decision.");
  const counters = new Set();
  let offsetMs = 0; // server clock minus this browser's: the countdown follows the server

  function tick() {
    const now = Date.now() + offsetMs;
    for (const node of counters) {
      if (!node.isConnected) {
        counters.delete(node);
        continue;
      }
      const left = (new Date(node.dataset.expires) - now) / 1000;
      node.textContent = remaining(left);
      node.classList.toggle("soon", left < SOON_S);
    }
  }
  const timer = setInterval(tick, 1000);
  ctx.signal.addEventListener("abort", () => clearInterval(timer));

  async function act(button, work) {
    button.disabled = true;
    try {
      replace(feedback, notice("success", await work()));
      await load();
    } catch (error) {
      const code = error instanceof ApiError && error.code ? ` (${error.code})` : "";
      replace(feedback, notice("error", `${error.message}${code}`));
      button.disabled = false;
    }
  }

  let shownKey = null;
  async function load() {
    const items = await call("/approvals", { signal: ctx.signal });
    if (items.length) offsetMs = new Date(items[0].now) - Date.now();
    // Re-render only when the set changed: a refresh must not wipe a comment being typed.
    const key = items.map((i) => `${i.approval.id}:${i.approval.state}`).join(",");
    if (key !== shownKey) {
      shownKey = key;
      counters.clear();
      replace(list, items.map((item) => itemView(item, ctx, { act, clock: counters })));
    }
    empty.hidden = items.length > 0;
    tick();
  }

  async function guarded() {
    try {
      await load();
    } catch (error) {
      if (!ctx.signal.aborted && error.name !== "AbortError") replace(feedback, notice("error", error.message));
    }
  }
  guarded();
  watchTenant(guarded, ctx);

  const node = el(
    "section",
    { "aria-labelledby": "approvals-heading" },
    heading,
    el("p", { class: "help" }, "Open approvals of your tenant, soonest to expire first. An approval not given in time expires and the execution is not run."),
    feedback,
    empty,
    list,
  );
  return { title: "Approvals", node };
}
