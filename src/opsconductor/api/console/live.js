// Live updates. The transport lives here and only here: the views get batches of events.
//
// followExecution(): per-execution events by long-poll (GET /executions/{id}/events with
// after=&wait=), which works across API processes through PostgreSQL LISTEN/NOTIFY.
// watchTenant(): tells the executions list when to refresh.

import { ApiError, call, segment } from "./api.js";

export const TERMINAL = new Set(["rejected", "completed", "failed", "cancelled", "timeout", "partial"]);

/** How long one long-poll may park on the server (the server's cap is 60 s). */
const WAIT_S = 25;
/** How often the executions list refreshes without a tenant-wide stream. */
const LIST_REFRESH_MS = 4000;

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

const aborted = (error, signal) => signal.aborted || error?.name === "AbortError";

/**
 * Follow one execution's events after the cursor `after`. `onBatch(events, status)` is
 * awaited for every answer, in order. Resolves once the execution has ended and every event
 * was delivered, or when `signal` aborts. Network failures are retried with back-off and
 * reported through `onTrouble(message | null)`.
 */
export async function followExecution(id, after, onBatch, { signal, onTrouble = () => {} }) {
  let cursor = after;
  let backoff = 500;
  while (!signal.aborted) {
    let page;
    try {
      page = await call(`/executions/${segment(id)}/events`, {
        query: { after: cursor, wait: WAIT_S },
        signal,
      });
    } catch (error) {
      if (aborted(error, signal)) return;
      if (error instanceof ApiError && error.status < 500) throw error;
      onTrouble(`Live updates interrupted (${error.message}); retrying…`);
      await sleep(backoff, signal);
      backoff = Math.min(backoff * 2, 10000);
      continue;
    }
    backoff = 500;
    onTrouble(null);
    cursor = page.last_event_id;
    await onBatch(page.events, page.status);
    if (TERMINAL.has(page.status) && page.events.length === 0) return;
  }
}

/** Call `onNews()` whenever the tenant's executions may have changed, until `signal` aborts. */
export async function watchTenant(onNews, { signal }) {
  while (!signal.aborted) {
    await sleep(LIST_REFRESH_MS, signal);
    if (!signal.aborted && !document.hidden) await onNews();
  }
}
