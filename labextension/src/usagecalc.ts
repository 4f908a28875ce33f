/**
 * The usage section's arithmetic: the rows of `GET /osire/api/usage` summed per model, one
 * value per day for the chart (days without use are zero), the bars' geometry, and how the
 * figures are written. The usage is asked at most once a minute.
 *
 * Pure (type imports only): test/usagecalc.test.mjs.
 */
import type { IUsageRow } from './types';

/** Days the section covers (today included). */
export const USAGE_DAYS = 30;
/** The shortest wait between two usage requests. */
export const USAGE_EVERY_MS = 60000;

/** One model's use over the period. */
export interface IModelUsage {
  model: string;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  gpu_hours: number;
  /** Billing unit-hours; null when no day of the model had billing. */
  billing: number | null;
}

/** The first day of the period ending on `now`'s UTC day (`YYYY-MM-DD`). */
export function sinceDay(now: number, days = USAGE_DAYS): string {
  const d = new Date(now);
  d.setUTCHours(0, 0, 0, 0);
  d.setUTCDate(d.getUTCDate() - (days - 1));
  return isoDay(d.getTime());
}

/** `YYYY-MM-DD` (UTC) of an epoch in milliseconds. */
export function isoDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** Whether the usage may be asked again at `now` (last asked at `askedAt`, ms; 0: never). */
export function usageDue(now: number, askedAt: number): boolean {
  return askedAt === 0 || now - askedAt >= USAGE_EVERY_MS;
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

/** Per model, the most GPU hours first (then the most tokens, then by name). */
export function sumByModel(rows: IUsageRow[]): IModelUsage[] {
  const byModel = new Map<string, IModelUsage>();
  for (const row of rows) {
    const model = String(row.model);
    let m = byModel.get(model);
    if (!m) {
      m = { model, requests: 0, prompt_tokens: 0, completion_tokens: 0, gpu_hours: 0, billing: null };
      byModel.set(model, m);
    }
    m.requests += num(row.requests);
    m.prompt_tokens += num(row.prompt_tokens);
    m.completion_tokens += num(row.completion_tokens);
    m.gpu_hours += num(row.gpu_hours);
    if (typeof row.billing === 'number' && Number.isFinite(row.billing)) {
      m.billing = (m.billing ?? 0) + row.billing;
    }
  }
  const tokens = (m: IModelUsage): number => m.prompt_tokens + m.completion_tokens;
  return [...byModel.values()].sort(
    (a, b) =>
      b.gpu_hours - a.gpu_hours || tokens(b) - tokens(a) || a.model.localeCompare(b.model)
  );
}

/** The sum of all models (billing null when no model had any). */
export function total(models: IModelUsage[]): IModelUsage {
  const sum: IModelUsage = {
    model: 'All models',
    requests: 0,
    prompt_tokens: 0,
    completion_tokens: 0,
    gpu_hours: 0,
    billing: null
  };
  for (const m of models) {
    sum.requests += m.requests;
    sum.prompt_tokens += m.prompt_tokens;
    sum.completion_tokens += m.completion_tokens;
    sum.gpu_hours += m.gpu_hours;
    if (m.billing !== null) {
      sum.billing = (sum.billing ?? 0) + m.billing;
    }
  }
  return sum;
}

export type UsageMetric = 'gpu_hours' | 'tokens';

export interface IDayValue {
  day: string;
  value: number;
}

/** One value per day from `since` to `until` (inclusive, `YYYY-MM-DD`), all models summed. */
export function dailySeries(
  rows: IUsageRow[],
  since: string,
  until: string,
  metric: UsageMetric
): IDayValue[] {
  const values = new Map<string, number>();
  for (const row of rows) {
    const v =
      metric === 'tokens' ? num(row.prompt_tokens) + num(row.completion_tokens) : num(row.gpu_hours);
    values.set(row.day, (values.get(row.day) ?? 0) + v);
  }
  const out: IDayValue[] = [];
  const start = Date.parse(`${since}T00:00:00Z`);
  const end = Date.parse(`${until}T00:00:00Z`);
  if (!Number.isFinite(start) || !Number.isFinite(end)) {
    return out;
  }
  for (let t = start; t <= end && out.length < 366; t += 86400000) {
    const day = isoDay(t);
    out.push({ day, value: values.get(day) ?? 0 });
  }
  return out;
}

export interface IBar {
  day: string;
  value: number;
  x: number;
  y: number;
  width: number;
  height: number;
}

/**
 * Bars filling a `width` x `height` box, one per day, left to right, with `gap` between them;
 * the tallest bar reaches the top. A day with some use is at least one unit tall so that it
 * shows; a day without any has no height.
 */
export function barGeometry(
  series: IDayValue[],
  width: number,
  height: number,
  gap = 1
): IBar[] {
  if (!series.length) {
    return [];
  }
  const top = Math.max(...series.map(d => d.value), 1e-12);
  const slot = width / series.length;
  const barWidth = Math.max(0.5, slot - gap);
  const round = (n: number): number => Math.round(n * 100) / 100;
  return series.map((d, i) => {
    const h = d.value > 0 ? Math.max(1, (d.value / top) * height) : 0;
    return {
      day: d.day,
      value: d.value,
      x: round(i * slot),
      y: round(height - h),
      width: round(barWidth),
      height: round(h)
    };
  });
}

/** 950, 1.2k, 34k, 1.5M. */
export function formatCount(n: number): string {
  const v = num(n);
  for (const [unit, scale] of [['B', 1e9], ['M', 1e6], ['k', 1e3]] as const) {
    if (Math.abs(v) >= scale) {
      const x = v / scale;
      return `${x >= 10 ? Math.round(x) : Math.round(x * 10) / 10}${unit}`;
    }
  }
  return String(Math.round(v));
}

/** GPU hours: 0, 0.02, 1.5, 12, 130. */
export function formatHours(h: number): string {
  const v = num(h);
  if (v === 0) {
    return '0';
  }
  if (v < 0.1) {
    return String(Math.round(v * 100) / 100 || '<0.01');
  }
  return v < 10 ? String(Math.round(v * 10) / 10) : String(Math.round(v));
}
