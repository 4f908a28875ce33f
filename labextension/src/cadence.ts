/**
 * How often the sidebar asks the server (the poll loop of `OsireModel`): every 2 s while the
 * panel is visible and something will change by itself soon (a deployment queued, starting or
 * stopping, a batch validating, queued, running or cancelling); every `refreshInterval` seconds
 * (a setting, 10 s by default: settings.ts) while everything is stable; every 60 s while the panel or the browser tab is
 * hidden. The scheduler's health rides along at most every 30 s, and each ready engine's metrics
 * are scraped every `metricsInterval` seconds while the panel is visible.
 *
 * Pure: the model says what it sees, these say when to ask next.
 */

export const FAST_POLL_MS = 2000;
export const HIDDEN_POLL_MS = 60000;
export const HEALTH_EVERY_MS = 30000;
/** The shortest wait between two metrics scrapes, whatever the setting says. */
export const MIN_METRICS_MS = 500;

/** What the poll loop's next delay depends on. */
export interface IPollState {
  /** The panel is shown and the browser tab is in front. */
  visible: boolean;
  /** Some deployment or batch will change state by itself soon. */
  busy: boolean;
  /** The user's seconds between refreshes while nothing changes (at least 1). */
  refreshInterval: number;
}

/** Milliseconds until the next poll of deployments and batches. */
export function pollDelay(state: IPollState): number {
  if (!state.visible) {
    return HIDDEN_POLL_MS;
  }
  return state.busy ? FAST_POLL_MS : Math.max(1, state.refreshInterval) * 1000;
}

/** Whether a poll at `now` should also refresh the health (last asked at `askedAt`, in ms). */
export function healthDue(now: number, askedAt: number): boolean {
  return now - askedAt > HEALTH_EVERY_MS;
}

/** Milliseconds between two metrics scrapes for the user's `metricsInterval` seconds. */
export function metricsDelay(metricsInterval: number): number {
  return Math.max(MIN_METRICS_MS, metricsInterval * 1000);
}
