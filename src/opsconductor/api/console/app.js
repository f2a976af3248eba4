// The console's shell: sign-in state, the header, and a hash router over the views.

import { UNAUTHORIZED, call, session } from "./api.js";
import * as approvals from "./approvals.js";
import * as assets from "./assets.js";
import { el, notice, replace } from "./dom.js";
import * as detail from "./detail.js";
import * as dlq from "./dlq.js";
import * as executions from "./executions.js";
import * as job from "./job.js";
import * as jobs from "./jobs.js";
import * as signin from "./signin.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const whoText = document.getElementById("who-text");
const announcer = document.getElementById("announcer");

/** Routes: hash pattern -> (ctx, match) -> view. */
const ROUTES = [
  [/^#\/executions\/([^/?#]+)$/, "executions", (ctx, m) => detail.view(ctx, decodeURIComponent(m[1]))],
  [/^#\/executions(?:\?(.*))?$/, "executions", (ctx, m) => executions.view(ctx, new URLSearchParams(m[1] ?? ""))],
  [/^#\/jobs\/([^/?#]+)$/, "jobs", (ctx, m) => job.view(ctx, decodeURIComponent(m[1]))],
  [/^#\/jobs$/, "jobs", (ctx) => jobs.view(ctx)],
  [/^#\/approvals$/, "approvals", (ctx) => approvals.view(ctx)],
  [/^#\/dlq$/, "dlq", (ctx) => dlq.view(ctx)],
  [/^#\/assets$/, "assets", (ctx) => assets.view(ctx)],
];

let me = null;
let running = null; // AbortController of the view on screen

function setTitle(text) {
  document.title = `${text} · OpsConductor`;
}

/** Say something to screen-reader users (the visible notices say it to everyone else). */
function announce(text) {
  announcer.textContent = "";
  requestAnimationFrame(() => {
    announcer.textContent = text;
  });
}

function show(view, { focusHeading }) {
  replace(main, view.node);
  setTitle(view.title);
  if (!focusHeading) return;
  const target = view.focus ?? view.node.querySelector("h1");
  target?.focus();
}

function stopView() {
  running?.abort();
  running = null;
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route({ focusHeading = true } = {}) {
  stopView();
  if (!me) return;
  const hash = location.hash || "#/executions";
  for (const [pattern, section, make] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    running = new AbortController();
    const ctx = { me, signal: running.signal, navigate, announce, setTitle };
    for (const link of nav.querySelectorAll("a")) {
      if (link.dataset.route === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    show(make(ctx, match), { focusHeading });
    return;
  }
  const heading = el("h1", { tabindex: "-1" }, "Not found");
  show(
    { title: "Not found", node: el("section", {}, heading, notice("error", "The console has no page at this address."), el("a", { href: "#/executions" }, "Go to the executions")) },
    { focusHeading },
  );
}

function showSignedIn() {
  replace(whoText, "Signed in as ", el("strong", {}, me.actor_id), ` in tenant ${me.tenant_id}`, me.roles.length ? ` (${me.roles.join(", ")})` : " (no roles)");
  nav.hidden = false;
  who.hidden = false;
}

function showSignIn(message) {
  stopView();
  me = null;
  nav.hidden = true;
  who.hidden = true;
  show(signin.view({ message, onSignedIn }), { focusHeading: true });
}

async function onSignedIn(token, found) {
  session.set(token);
  me = found;
  showSignedIn();
  announce(`Signed in as ${me.actor_id}`);
  if (!location.hash || location.hash === "#/") location.hash = "#/executions";
  else route();
}

function signOut(message) {
  session.clear();
  showSignIn(message);
}

async function start() {
  document.getElementById("skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    main.focus();
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut("You are signed out."));
  window.addEventListener(UNAUTHORIZED, () => {
    if (me) signOut("Your token is no longer accepted (revoked or expired). Sign in again.");
  });
  window.addEventListener("hashchange", () => route());
  if (!session.token) {
    showSignIn();
    return;
  }
  try {
    me = await call("/me");
  } catch (error) {
    if (!me && session.token) signOut(`Could not restore your session: ${error.message}`);
    return;
  }
  showSignedIn();
  route({ focusHeading: false });
}

start();
