// A job's run form, drawn from GET /jobs/{name}/form (one field per declared parameter).
// Values are checked here the way the server will check them, so a typo is caught before
// anything is sent; whatever the server still refuses is shown next to its field.

import { ApiError, call, segment } from "./api.js";
import { el, notice, replace } from "./dom.js";

/** What JSON can carry exactly; a larger integer goes through `opsc jobs run --set`. */
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** The empty option of a select: "choose" when a value must be picked, else "not set". */
function emptyOption(field) {
  if (field.default !== null) return null;
  return el("option", { value: "" }, field.required ? "— choose —" : "— not set —");
}

function control(field, id, describedBy) {
  const common = { id, name: field.name, "aria-describedby": describedBy, required: field.required };
  if (field.control === "select") {
    const options = field.choices.map((choice) => el("option", { value: choice, selected: String(field.default) === choice }, choice));
    return el("select", common, emptyOption(field), options);
  }
  const value = field.default === null ? "" : String(field.default);
  const props = { ...common, type: "text", value, autocomplete: "off" };
  if (field.max_length) props.maxlength = String(field.max_length);
  if (field.control === "integer") props.inputmode = "numeric";
  if (field.control === "secret_path") {
    props.spellcheck = "false";
    props.placeholder = "kv/db/password";
  }
  return el("input", props);
}

/**
 * The value to send for `field` from the control's text: `{ value }`, `{ omit: true }`
 * (empty: the server applies the default, or leaves it unset) or `{ error }`.
 */
export function check(field, raw) {
  if (raw === "") {
    if (field.required && field.default === null) return { error: `Required: give ${field.hint}.` };
    return { omit: true };
  }
  if (field.max_length && raw.length > field.max_length) return { error: `Must be ${field.hint}.` };
  if (field.pattern && !new RegExp(field.pattern).test(raw)) return { error: `Must be ${field.hint} (got “${raw}”).` };
  if (field.control === "select" && !field.choices.includes(raw)) return { error: `Must be ${field.hint} (got “${raw}”).` };
  if (field.type === "int") {
    const big = BigInt(raw);
    if (big > SAFE || big < -SAFE) return { error: `Too large for the console: run it with opsc jobs run --set ${field.name}=${raw}.` };
    return { value: Number(big) };
  }
  if (field.type === "bool") return { value: raw === "true" };
  return { value: raw };
}

/** `params.tier` (or `body.params.tier`) -> `tier`; null for a path outside the params. */
function paramOf(path) {
  const match = /^(?:body\.)?params\.([A-Za-z_][A-Za-z0-9_]*)/.exec(path ?? "");
  return match ? match[1] : null;
}

/**
 * [param, message] pairs of a refused run: from the problem's `errors`, else from its
 * detail (`params.tier: must be one of ...; params.n: ...`, as 400 answers say it).
 */
function problemFields(error) {
  if (!(error instanceof ApiError)) return [];
  const listed = error.errors.length
    ? error.errors.map((e) => [e.path, e.message])
    : error.detail.split("; ").map((part) => {
        const at = part.indexOf(": ");
        return at > 0 ? [part.slice(0, at), part.slice(at + 2)] : [null, part];
      });
  return listed.map(([path, message]) => [paramOf(path), message]).filter(([name]) => name);
}

/** The run form of `form` (a RunFormOut); a run goes to `/jobs/{job}/runs` at its version. */
export function runForm(ctx, form) {
  const feedback = el("div", { class: "feedback" });
  const rows = new Map(); // param name -> { field, input, error }
  const items = form.fields.map((field) => {
    const id = `param-${field.name}`;
    const input = control(field, id, `${id}-hint ${id}-error`);
    const error = el("p", { class: "field-error", id: `${id}-error`, hidden: true });
    rows.set(field.name, { field, input, error });
    const marks = [field.required ? " (required)" : "", field.type === "secret-ref" ? " — secret path" : ""];
    const hint = [field.description ? `${field.description}. ` : "", `${field.hint[0].toUpperCase()}${field.hint.slice(1)}.`];
    if (field.default !== null) hint.push(` Default: ${field.default}.`);
    if (field.type === "secret-ref") hint.push(" The worker fetches the secret at run time; its value is never shown.");
    return el(
      "div",
      { class: "form-row" },
      el("label", { for: id }, el("code", {}, field.name), ...marks),
      input,
      el("p", { class: "help", id: `${id}-hint` }, hint),
      error,
    );
  });

  function showError(name, message) {
    const row = rows.get(name);
    row.input.setAttribute("aria-invalid", "true");
    row.error.textContent = message;
    row.error.hidden = false;
  }

  function clearErrors() {
    for (const { input, error } of rows.values()) {
      input.removeAttribute("aria-invalid");
      error.hidden = true;
      error.textContent = "";
    }
  }

  const submit = el("button", { type: "submit" }, `Run version ${form.version}`);
  const node = el(
    "form",
    { class: "run-form", novalidate: true, "aria-labelledby": "run-heading" },
    form.fields.length ? items : el("p", { class: "muted" }, "This job declares no parameters."),
    feedback,
    submit,
  );

  node.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    replace(feedback);
    const params = {};
    let firstBad = null;
    for (const [name, { field, input }] of rows) {
      // Text is sent as typed (spaces may matter in a string); an integer is trimmed, as --set does.
      const found = check(field, field.control === "integer" ? input.value.trim() : input.value);
      if (found.error) {
        showError(name, found.error);
        firstBad ??= input;
      } else if (!found.omit) params[name] = found.value;
    }
    if (firstBad) {
      replace(feedback, notice("error", "Fix the marked fields: nothing was run."));
      ctx.announce("Fix the marked fields: nothing was run.");
      firstBad.focus();
      return;
    }
    submit.disabled = true;
    replace(feedback, notice("info", "Starting the run…"));
    try {
      const execution = await call(`/jobs/${segment(form.job)}/runs`, { method: "POST", body: { params, version: form.version } });
      ctx.announce(`Run of ${form.job} started`);
      ctx.navigate(`#/executions/${segment(execution.id)}`);
    } catch (error) {
      submit.disabled = false;
      const fieldErrors = problemFields(error).filter(([name]) => rows.has(name));
      for (const [name, message] of fieldErrors) showError(name, message);
      replace(feedback, notice("error", fieldErrors.length ? "The server refused the marked fields: nothing was run." : error.message));
      if (fieldErrors.length) rows.get(fieldErrors[0][0]).input.focus();
    }
  });
  return node;
}
