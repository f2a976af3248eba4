// The sign-in page: a token, checked against GET /api/v1/me before it is kept.

import { ApiError, call } from "./api.js";
import { el, notice, replace } from "./dom.js";

/** `onSignedIn(token, me)` runs once the server accepted the token. */
export function view({ message, onSignedIn }) {
  const heading = el("h1", { tabindex: "-1" }, "Sign in");
  const feedback = el("div", { class: "feedback" });
  if (message) replace(feedback, notice("info", message));
  const input = el("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-help",
  });
  const submit = el("button", { type: "submit" }, "Sign in");
  const form = el(
    "form",
    { class: "signin", novalidate: true },
    el("label", { for: "token" }, "API token"),
    input,
    el(
      "p",
      { id: "token-help", class: "help" },
      "A bearer token bound to your actor and tenant: ",
      el("code", {}, "make run"),
      " prints a demo admin token; an admin makes others with ",
      el("code", {}, "opsc tokens create NAME --role ROLE"),
      ". The token is kept for this browser tab only.",
    ),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      input.setAttribute("aria-invalid", "true");
      replace(feedback, notice("error", "Enter your API token."));
      input.focus();
      return;
    }
    submit.disabled = true;
    replace(feedback, notice("info", "Checking the token…"));
    try {
      const me = await call("/me", { token });
      await onSignedIn(token, me);
    } catch (error) {
      const why =
        error instanceof ApiError && error.status === 401
          ? "The server did not accept this token (unknown, revoked or expired)."
          : `Could not sign in: ${error.message}`;
      input.setAttribute("aria-invalid", "true");
      replace(feedback, notice("error", why));
      submit.disabled = false;
      input.focus();
    }
  });
  const node = el("section", { class: "panel narrow", "aria-labelledby": "signin-heading" }, heading, feedback, form);
  heading.id = "signin-heading";
  return { title: "Sign in", node, focus: input };
}
