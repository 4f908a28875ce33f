/**
 * Engine metrics: Prometheus text parsing, vLLM's figures, counter rates and sparkline geometry.
 *
 * Pure (no runtime imports): tested by test/metrics.test.mjs over the compiled lib/metrics.js.
 */

/** One sample of the Prometheus text exposition format. */
export interface ISample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Parse Prometheus text (format 0.0.4): `name{label="value",...} value [timestamp]` lines,
 * `#` comments skipped. Label values may hold escaped quotes, backslashes and newlines, and
 * commas or braces inside quotes. Lines that do not parse are skipped, never fatal.
 */
export function parsePrometheus(text: string): ISample[] {
  const samples: ISample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) {
      continue;
    }
    const sample = parseLine(line);
    if (sample) {
      samples.push(sample);
    }
  }
  return samples;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

function parseLine(line: string): ISample | null {
  const nameMatch = NAME.exec(line);
  if (!nameMatch) {
    return null;
  }
  const name = nameMatch[0];
  let i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    for (;;) {
      while (line[i] === ' ' || line[i] === ',') {
        i++;
      }
      if (line[i] === '}') {
        i++;
        break;
      }
      const labelMatch = LABEL_NAME.exec(line.slice(i));
      if (!labelMatch) {
        return null;
      }
      i += labelMatch[0].length;
      while (line[i] === ' ') {
        i++;
      }
      if (line[i] !== '=' || line[i + 1] !== '"') {
        return null;
      }
      i += 2;
      let value = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) {
          return null; // unterminated value
        }
        i++;
        if (c === '"') {
          break;
        }
        if (c === '\\') {
          const next = line[i++];
          value += next === 'n' ? '\n' : next ?? '';
        } else {
          value += c;
        }
      }
      labels[labelMatch[0]] = value;
    }
  }
  const rest = line.slice(i).trim().split(/\s+/);
  if (!rest[0]) {
    return null;
  }
  const value = parseValue(rest[0]);
  return value === null ? null : { name, labels, value };
}

function parseValue(text: string): number | null {
  switch (text) {
    case 'NaN':
      return NaN;
    case '+Inf':
    case 'Inf':
      return Infinity;
    case '-Inf':
      return -Infinity;
  }
  const value = Number(text);
  return text !== '' && !Number.isNaN(value) ? value : null;
}

/** The figures the sidebar shows, each null when the engine does not export it. */
export interface IEngineSnapshot {
  /** Requests being generated now (`vllm:num_requests_running`). */
  running: number | null;
  /** Requests waiting for a slot (`vllm:num_requests_waiting`). */
  waiting: number | null;
  /** KV-cache use, 0..1 (`vllm:kv_cache_usage_perc`, formerly `gpu_cache_usage_perc`). */
  kvCache: number | null;
  /** The generated-tokens counter (`vllm:generation_tokens_total`): its rate is tokens/s. */
  generationTokens: number | null;
}

export const VLLM_METRICS = {
  running: ['vllm:num_requests_running'],
  waiting: ['vllm:num_requests_waiting'],
  kvCache: ['vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc'],
  generationTokens: ['vllm:generation_tokens_total']
} as const;

/**
 * vLLM's figures from parsed samples: counts and counters summed over label sets (one per
 * served model name), KV-cache use the highest of them. Null when none of them is exported
 * (an engine that is not vLLM shows nothing rather than zeros).
 */
export function vllmSnapshot(samples: ISample[]): IEngineSnapshot | null {
  const pick = (names: readonly string[], combine: 'sum' | 'max'): number | null => {
    for (const name of names) {
      const values = samples
        .filter(s => s.name === name && Number.isFinite(s.value))
        .map(s => s.value);
      if (values.length) {
        return combine === 'sum'
          ? values.reduce((a, b) => a + b, 0)
          : Math.max(...values);
      }
    }
    return null;
  };
  const snapshot: IEngineSnapshot = {
    running: pick(VLLM_METRICS.running, 'sum'),
    waiting: pick(VLLM_METRICS.waiting, 'sum'),
    kvCache: pick(VLLM_METRICS.kvCache, 'max'),
    generationTokens: pick(VLLM_METRICS.generationTokens, 'sum')
  };
  return Object.values(snapshot).some(v => v !== null) ? snapshot : null;
}

export interface IPoint {
  /** Milliseconds (any clock, the same for all points of a series). */
  t: number;
  v: number;
}

/**
 * The per-second rate of a counter between two samples; null when it cannot be known: no
 * time passed, or the counter went down (the engine restarted and its counters began again).
 */
export function counterRate(previous: IPoint, current: IPoint): number | null {
  const seconds = (current.t - previous.t) / 1000;
  if (!(seconds > 0) || current.v < previous.v) {
    return null;
  }
  return (current.v - previous.v) / seconds;
}

export type SeriesName = 'running' | 'waiting' | 'kvCache' | 'tokensPerSecond';

/**
 * The last `windowMs` of one engine's figures, one series per figure. A figure the engine
 * does not export has an empty series (the view hides it); a counter reset leaves a gap.
 */
export class MetricsHistory {
  constructor(public windowMs: number) {}

  readonly series: Record<SeriesName, IPoint[]> = {
    running: [],
    waiting: [],
    kvCache: [],
    tokensPerSecond: []
  };

  /** When the first scrape was added (ms; null: none yet). */
  startedAt: number | null = null;

  /** Add one scrape taken at `t` (ms). */
  add(t: number, snapshot: IEngineSnapshot): void {
    if (this.startedAt === null) {
      this.startedAt = t;
    }
    const push = (name: SeriesName, v: number | null): void => {
      if (v !== null && Number.isFinite(v)) {
        this.series[name].push({ t, v });
      }
    };
    push('running', snapshot.running);
    push('waiting', snapshot.waiting);
    push('kvCache', snapshot.kvCache);
    if (snapshot.generationTokens !== null) {
      const current = { t, v: snapshot.generationTokens };
      if (this._lastTokens) {
        push('tokensPerSecond', counterRate(this._lastTokens, current));
      }
      this._lastTokens = current;
    }
    this.prune(t);
  }

  /** Drop points older than the window before `now`. */
  prune(now: number): void {
    const oldest = now - this.windowMs;
    for (const points of Object.values(this.series)) {
      let drop = 0;
      while (drop < points.length && points[drop].t < oldest) {
        drop++;
      }
      points.splice(0, drop);
    }
  }

  /** The time span the charts draw at `now` (see `chartSpan`). */
  span(now: number): { t0: number; t1: number; full: boolean } {
    return chartSpan(Object.values(this.series), now, this.windowMs, this.startedAt);
  }

  /** True when some figure has at least one point. */
  get hasData(): boolean {
    return Object.values(this.series).some(points => points.length > 0);
  }

  private _lastTokens: IPoint | null = null;
}

/**
 * The time span charts draw, the same for every series of one history: the last `windowMs`
 * before `now` once the history is that old (`full`); before that, the samples' own span (the
 * first sample of any series to the last), so the line uses the chart's whole width from the
 * first minute instead of a thin strip at its right edge.
 */
export function chartSpan(
  series: IPoint[][],
  now: number,
  windowMs: number,
  startedAt: number | null
): { t0: number; t1: number; full: boolean } {
  if (startedAt !== null && now - startedAt >= windowMs) {
    return { t0: now - windowMs, t1: now, full: true };
  }
  let first = Infinity;
  let last = -Infinity;
  for (const points of series) {
    if (points.length) {
      first = Math.min(first, points[0].t);
      last = Math.max(last, points[points.length - 1].t);
    }
  }
  if (!Number.isFinite(first)) {
    return { t0: now - windowMs, t1: now, full: false };
  }
  return { t0: first, t1: Math.max(last, first), full: false };
}

/**
 * SVG path data (`M x y L x y ...`) drawing `points` in a `width` x `height` box: time from
 * `t0` to `t1` left to right, values from 0 (bottom) to `max` (top, at least the largest
 * value, and never 0 so a flat zero line sits on the bottom).
 */
export function sparklinePath(
  points: IPoint[],
  width: number,
  height: number,
  t0: number,
  t1: number,
  max?: number
): string {
  if (!points.length) {
    return '';
  }
  const top = Math.max(max ?? 0, ...points.map(p => p.v), 1e-9);
  const span = Math.max(t1 - t0, 1);
  const fmt = (n: number): string => String(Math.round(n * 10) / 10);
  if (points.length === 1 || t1 <= t0) {
    // One moment only: a level line across the box (the value, not a dot at one edge).
    const last = points[points.length - 1];
    const y = fmt(height - (Math.max(0, last.v) / top) * height);
    return `M0 ${y} L${fmt(width)} ${y}`;
  }
  return points
    .map((p, i) => {
      const x = Math.min(width, Math.max(0, ((p.t - t0) / span) * width));
      const y = height - (Math.max(0, p.v) / top) * height;
      return `${i === 0 ? 'M' : 'L'}${fmt(x)} ${fmt(y)}`;
    })
    .join(' ');
}

/** The figure as the sidebar writes it. */
export function formatFigure(name: SeriesName, value: number): string {
  switch (name) {
    case 'kvCache':
      return `${Math.round(value * 100)}%`;
    case 'tokensPerSecond':
      return value >= 10 ? `${Math.round(value)} tok/s` : `${value.toFixed(1)} tok/s`;
    default:
      return String(Math.round(value));
  }
}
