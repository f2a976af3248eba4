// Live updates. The transport lives here and only here: the views get batches of events.
//
// Preferred: Server-Sent Events read with fetch() (so the token travels in the
// Authorization header, never in a URL), resumed with Last-Event-ID after a drop or a
// resync. Where the server has no stream endpoint (404), or the tab chose long-poll
// (localStorage "opsconductor.transport" = "long-poll", e.g. behind a proxy that buffers
// streams), the per-execution feed long-polls GET /executions/{id}/events?after=&wait= and
// the executions list refreshes on a timer. Both work across API processes (PostgreSQL
// LISTEN/NOTIFY on the server).

import { ApiError, UNAUTHORIZED, apiUrl, authHeaders, call, segment } from "./api.js";

export const TERMINAL = new Set(["rejected", "completed", "failed", "cancelled", "timeout", "partial"]);

/** How long one long-poll may park on the server (the server's cap is 60 s). */
const WAIT_S = 25;
/** How often the executions list refreshes without a tenant-wide stream. */
const LIST_REFRESH_MS = 4000;
/** Tenant-wide events are coalesced: one list refresh per burst. */
const LIST_DEBOUNCE_MS = 250;
const MAX_BACKOFF_MS = 10000;

/** The transport this tab uses: "stream" (default) or "long-poll". */
export function transport() {
  return localStorage.getItem("opsconductor.transport") === "long-poll" ? "long-poll" : "stream";
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

const aborted = (error, signal) => signal.aborted || error?.name === "AbortError";

/** Parse a text/event-stream body into messages `{event, id, data}` (SSE framing). */
async function* sseMessages(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = { event: "message", id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const raw of lines) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line === "") {
        if (message.data.length) yield { ...message, data: message.data.join("\n") };
        message = { event: "message", id: null, data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // keepalive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") message.data.push(text);
      else if (field === "event") message.event = text;
      else if (field === "id") message.id = text;
    }
  }
}

/**
 * Hold an SSE connection to `path`, reconnecting after drops (Last-Event-ID: the last id
 * seen). `onMessage(message)` returns true to stop. Resolves "unavailable" when the server
 * has no such stream, "done" when stopped or aborted.
 */
async function stream(path, cursor, onMessage, { signal, onTrouble = () => {} }) {
  let lastId = cursor;
  let backoff = 500;
  while (!signal.aborted) {
    const headers = { ...authHeaders(), Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
    try {
      const response = await fetch(apiUrl(path), { headers, signal, cache: "no-store" });
      if (response.status === 404) return "unavailable";
      if (response.status === 401) window.dispatchEvent(new CustomEvent(UNAUTHORIZED));
      if (response.status >= 400 && response.status < 500) {
        throw new ApiError(response.status, await response.json().catch(() => null));
      }
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      onTrouble(null);
      backoff = 500;
      for await (const message of sseMessages(response)) {
        if (message.id !== null) lastId = message.id;
        if (message.event === "resync") lastId = JSON.parse(message.data).last_event_id;
        if (await onMessage(message)) return "done";
        if (message.event === "resync") break; // the server closes; resume from lastId
      }
    } catch (error) {
      if (aborted(error, signal)) return "done";
      if (error instanceof ApiError) throw error;
      onTrouble(`Live updates interrupted (${error.message}); reconnecting…`);
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }
  return "done";
}

/** The long-poll transport of followExecution(). */
async function pollExecution(id, after, onBatch, { signal, onTrouble = () => {} }) {
  let cursor = after;
  let backoff = 500;
  while (!signal.aborted) {
    let page;
    try {
      page = await call(`/executions/${segment(id)}/events`, { query: { after: cursor, wait: WAIT_S }, signal });
    } catch (error) {
      if (aborted(error, signal)) return;
      if (error instanceof ApiError && error.status < 500) throw error;
      onTrouble(`Live updates interrupted (${error.message}); retrying…`);
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      continue;
    }
    backoff = 500;
    onTrouble(null);
    cursor = page.last_event_id;
    await onBatch(page.events, page.status);
    if (TERMINAL.has(page.status) && page.events.length === 0) return;
  }
}

/**
 * Follow one execution's events after the cursor `after`. `onBatch(events, status)` is
 * awaited for every batch, in order (`status` is null when the batch does not tell it).
 * Resolves once the execution has ended and every event was delivered, or when `signal`
 * aborts. Trouble (and its end) is reported through `onTrouble(message | null)`.
 */
export async function followExecution(id, after, onBatch, options) {
  if (transport() === "stream") {
    const path = `/executions/${segment(id)}/stream`;
    const outcome = await stream(
      path,
      after,
      async (message) => {
        if (message.event === "end") {
          await onBatch([], JSON.parse(message.data).status);
          return true;
        }
        if (message.event === "message") await onBatch([JSON.parse(message.data)], null);
        return false;
      },
      options,
    );
    if (outcome === "done") return;
  }
  await pollExecution(id, after, onBatch, options);
}

/** Call `onNews()` whenever the tenant's executions may have changed, until `signal` aborts. */
export async function watchTenant(onNews, { signal }) {
  if (transport() === "stream") {
    let timer = null;
    const soon = () => {
      clearTimeout(timer);
      timer = setTimeout(onNews, LIST_DEBOUNCE_MS);
    };
    signal.addEventListener("abort", () => clearTimeout(timer));
    const onMessage = async () => {
      soon();
      return false;
    };
    try {
      const outcome = await stream("/stream", null, onMessage, { signal, onTrouble: soon });
      if (outcome === "done") return;
    } catch {
      return; // refused (401 signs the tab out; the list shows its own error)
    }
  }
  while (!signal.aborted) {
    await sleep(LIST_REFRESH_MS, signal);
    if (!signal.aborted && !document.hidden) await onNews();
  }
}
