// The tenant's inventory (read-only here; `opsc assets` and the API manage it).

import { call } from "./api.js";
import { el, notice, replace, table } from "./dom.js";

function tags(map) {
  const entries = Object.entries(map ?? {});
  if (entries.length === 0) return el("span", { class: "muted" }, "—");
  return el("ul", { class: "tags" }, entries.map(([k, v]) => el("li", {}, el("code", {}, `${k}=${v}`))));
}

function row(a) {
  return el(
    "tr",
    {},
    el("td", {}, el("code", {}, a.asset_id)),
    el("td", {}, a.hostname),
    el("td", {}, a.port ? `${a.address}:${a.port}` : a.address),
    el("td", {}, a.environment),
    el("td", {}, a.connection_type, a.username ? ` (${a.username})` : ""),
    el("td", {}, a.os ?? "—"),
    el("td", {}, a.credential_ref ? el("code", {}, a.credential_ref) : "—"),
    el("td", {}, tags(a.tags)),
  );
}

export function view(ctx) {
  const heading = el("h1", { tabindex: "-1", id: "assets-heading" }, "Assets");
  const feedback = el("div", { class: "feedback" });
  const { wrapper, body } = table(
    "The tenant's inventory",
    ["Asset", "Hostname", "Address", "Environment", "Connection", "OS", "Credential", "Tags"],
    [],
  );
  call("/assets", { signal: ctx.signal })
    .then((assets) => replace(body, assets.map(row)))
    .catch((error) => {
      if (!ctx.signal.aborted) replace(feedback, notice("error", error.message));
    });
  const node = el("section", { "aria-labelledby": "assets-heading" }, heading, feedback, wrapper);
  return { title: "Assets", node };
}
