/**
 * The launch form's estimate (`POST /osire/api/deployments/estimate`): when Slurm expects the
 * request to start and what it would cost, asked as the user edits the resource fields.
 *
 * `LatestQuery` paces the asking: one question ~400 ms after the last edit, at most one in
 * flight, and an answer to anything but the newest question is dropped. `estimateView` turns
 * the server's answer into the line under the card (the server's text stays text).
 *
 * Pure (type imports only): test/estimate.test.mjs.
 */
import type { IEstimate } from './types';

export const ESTIMATE_DELAY_MS = 400;

/** What a `LatestQuery` delivers: the answer (or the error) to the newest question asked. */
export type QueryResult<A> =
  | { ok: true; key: string; value: A }
  | { ok: false; key: string; error: unknown };

export interface ITimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const GLOBAL_TIMERS: ITimers = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: handle => clearTimeout(handle as ReturnType<typeof setTimeout>)
};

/**
 * Asks `ask(query)` for the newest query given to `update`, debounced, one at a time.
 *
 * - `update(key, query)`: a new question (same key as the newest: nothing to do); `null`
 *   withdraws the question (an invalid form): nothing is asked and a late answer is dropped.
 * - Only the newest question's answer reaches `deliver`; an edit while a question is in flight
 *   waits for it to end (the server is never asked twice at once), then the newest is asked.
 */
export class LatestQuery<Q, A> {
  constructor(
    private readonly _ask: (query: Q) => Promise<A>,
    private readonly _deliver: (result: QueryResult<A>) => void,
    private readonly _delay = ESTIMATE_DELAY_MS,
    private readonly _timers: ITimers = GLOBAL_TIMERS
  ) {}

  /** The key of the newest question (null: none). */
  get key(): string | null {
    return this._key;
  }

  /** True while a question is with the server. */
  get inFlight(): boolean {
    return this._inFlight;
  }

  update(key: string | null, query: Q | null): void {
    if (this._disposed || key === this._key) {
      return;
    }
    this._key = key;
    this._query = key === null ? null : query;
    this._seq++;
    this._cancelTimer();
    if (key !== null) {
      this._timer = this._timers.set(() => {
        this._timer = null;
        this._fire();
      }, this._delay);
    }
  }

  /** Forget the newest question so that the same one is asked again (e.g. the form reopened). */
  reset(): void {
    this.update(null, null);
  }

  dispose(): void {
    this._disposed = true;
    this._cancelTimer();
  }

  private _fire(): void {
    if (this._disposed || this._inFlight || this._query === null || this._sent === this._seq) {
      return;
    }
    const seq = this._seq;
    const key = this._key as string;
    this._sent = seq;
    this._inFlight = true;
    let result: QueryResult<A>;
    Promise.resolve()
      .then(() => this._ask(this._query as Q))
      .then(
        value => {
          result = { ok: true, key, value };
        },
        error => {
          result = { ok: false, key, error };
        }
      )
      .then(() => {
        this._inFlight = false;
        if (this._disposed) {
          return;
        }
        if (seq === this._seq) {
          this._deliver(result);
        } else if (this._timer === null) {
          this._fire(); // edited meanwhile and its wait is over: ask the newest now
        }
      });
  }

  private _cancelTimer(): void {
    if (this._timer !== null) {
      this._timers.clear(this._timer);
      this._timer = null;
    }
  }

  private _key: string | null = null;
  private _query: Q | null = null;
  private _seq = 0;
  private _sent = 0;
  private _inFlight = false;
  private _timer: unknown = null;
  private _disposed = false;
}

/** The line under a launch card. */
export interface IEstimateView {
  /** "starts in about 12 minutes on gpu03; 4 GPU x 8 h = 32 GPU-h, 96 SU". */
  line: string;
  /** Why the user should think twice (the server's `confirm`, limits, fit), or null. */
  warning: string | null;
  tone: 'ok' | 'warn';
}

/** The server's answer as the card shows it. */
export function estimateView(e: IEstimate): IEstimateView {
  const line = text(e.summary) || fallbackLine(e);
  const warnings: string[] = [];
  if (e.within_limits === false && text(e.limits_reason)) {
    warnings.push(text(e.limits_reason));
  }
  if (text(e.confirm)) {
    warnings.push(text(e.confirm));
  } else if (e.fits === false && text(e.fit_reason)) {
    warnings.push(text(e.fit_reason));
  }
  const unique = warnings.filter((w, i) => warnings.indexOf(w) === i);
  const warning = unique.length ? unique.join('; ') : null;
  return { line, warning, tone: warning || e.within_limits === false ? 'warn' : 'ok' };
}

/** A line from the figures when the server sent no summary. */
function fallbackLine(e: IEstimate): string {
  const when =
    e.start === null || e.start === undefined
      ? text(e.start_reason) || 'start time unknown'
      : `starts at ${e.start}${e.nodes ? ` on ${e.nodes}` : ''}`;
  const parts = [`${number(e.gpu_hours)} GPU-h`];
  if (e.billing && typeof e.billing.unit_hours === 'number') {
    parts.push(`${number(e.billing.unit_hours)} SU`);
  }
  return `${when}; ${parts.join(', ')}`;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value.trim() : '';
}

function number(value: unknown): string {
  return typeof value === 'number' && Number.isFinite(value)
    ? String(Math.round(value * 100) / 100)
    : '?';
}

/** Why no estimate is shown (an error that names no field), in words, and whether the
 * request itself was refused (a launch would be too: shown as a warning). */
export function estimateUnavailable(
  status: number,
  message: string
): { text: string; refused: boolean } {
  if (status === 404) {
    return { text: 'no estimate from this server', refused: false };
  }
  if (status >= 400 && status < 500) {
    return { text: `a launch would be refused: ${message}`, refused: true };
  }
  return { text: `no estimate: ${message}`, refused: false };
}

/** A stable key for a request body (same body, same key, whatever the order of its fields). */
export function requestKey(body: unknown): string {
  return JSON.stringify(sortKeys(body));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) {
    return value.map(sortKeys);
  }
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value as object).sort()) {
      out[k] = sortKeys((value as Record<string, unknown>)[k]);
    }
    return out;
  }
  return value;
}
