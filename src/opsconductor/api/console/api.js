// The REST API under /api/v1, with the signed-in token. Errors are RFC 9457 problems.

const TOKEN_KEY = "opsconductor.token";

/** The API's base URL, relative to the console's own (so a path prefix proxy works too). */
export const API_BASE = new URL("../api/v1/", document.baseURI);

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** An error answer: `status`, the problem's `detail`, its `code` (e.g. hash_mismatch). */
export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem?.detail ?? `the server answered ${status}`;
    super(detail);
    this.status = status;
    this.detail = detail;
    this.code = problem?.code ?? null;
    this.errors = problem?.errors ?? [];
  }
}

/** Fired on `window` when the token stops working (401), so the app can sign out. */
export const UNAUTHORIZED = "opsconductor:unauthorized";

/** The URL of an API path (`/executions/ID`) with query parameters (empty ones left out). */
export function apiUrl(path, query = {}) {
  const url = new URL(path.replace(/^\//, ""), API_BASE);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  return url;
}

/** Authorization header of the signed-in token (or an explicit one, when signing in). */
export function authHeaders(token = session.token) {
  return { Authorization: `Bearer ${token}` };
}

/**
 * Call the API and return its JSON (null for 204). Throws ApiError on an error answer;
 * a 401 also fires UNAUTHORIZED unless an explicit `token` was given (signing in).
 */
export async function call(path, { method = "GET", body, query, signal, token } = {}) {
  const headers = { Accept: "application/json", ...authHeaders(token ?? session.token) };
  const init = { method, headers, signal, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(apiUrl(path, query), init);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && token === undefined) {
      window.dispatchEvent(new CustomEvent(UNAUTHORIZED));
    }
    throw new ApiError(response.status, data);
  }
  return data;
}

/** Does the signed-in caller hold `resource:action` (anywhere)? */
export function can(me, permission) {
  return (me?.permissions ?? []).some((p) => p === permission || p.startsWith(`${permission}@`));
}

/** An execution id or plan path, safe inside a URL path segment. */
export const segment = (value) => encodeURIComponent(String(value));
