/**
 * Idle replicas as cost: the GPU hours a ready deployment has held since its last request
 * (or, never used, since each replica became ready), shown on its card.
 *
 * Pure (type imports only): test/idle.test.mjs.
 */
import type { IDeployment } from './types';

/** Below this, a deployment is not called idle (requests come and go). */
export const IDLE_AFTER_S = 60;

export interface IIdleCost {
  /** Seconds since the last request (or since the deployment became ready). */
  idleSeconds: number;
  /** GPU hours held by the ready replicas over that time. */
  gpuHours: number;
  /** GPUs held now (per replica x nodes x ready replicas). */
  gpus: number;
  /** Whether a request ever reached it. */
  used: boolean;
}

/**
 * What a ready deployment's idle GPUs have cost at `now` (epoch seconds); null when it is not
 * ready, a request runs now, or it has been idle for less than `IDLE_AFTER_S`. Each ready
 * replica counts from the later of the last request and its own ready time (its start where
 * the ready time is unknown): GPUs per replica x nodes x that time.
 */
export function idleCost(d: IDeployment, now: number): IIdleCost | null {
  if (d.state !== 'ready' || (d.policy?.in_flight ?? 0) > 0) {
    return null;
  }
  const lastUsed = Math.max(num(d.last_used), num(d.policy?.last_used)) || null;
  const perReplica = Math.max(0, num(d.resources?.gpus)) * Math.max(1, num(d.resources?.nodes));
  let seconds = 0;
  let gpus = 0;
  let idleSince = Infinity;
  for (const r of d.replicas ?? []) {
    if (r.state !== 'ready') {
      continue;
    }
    const ready = num(r.ready_at) || num(r.started_at);
    const from = Math.max(ready, lastUsed ?? 0);
    if (!from || from >= now) {
      continue;
    }
    idleSince = Math.min(idleSince, from);
    seconds += now - from;
    gpus += perReplica;
  }
  if (!Number.isFinite(idleSince)) {
    return null;
  }
  const idleSeconds = now - (lastUsed ?? idleSince);
  if (idleSeconds < IDLE_AFTER_S) {
    return null;
  }
  return { idleSeconds, gpuHours: (seconds * perReplica) / 3600, gpus, used: lastUsed !== null };
}

/** "Idle 25 min since its last request: 2 GPUs, 0.83 GPU-h spent". */
export function idleLine(cost: IIdleCost): string {
  const since = cost.used ? 'since its last request' : 'since it became ready, never used';
  const head = `Idle ${duration(cost.idleSeconds)} ${since}`;
  if (cost.gpus === 0) {
    return head;
  }
  return `${head}: ${cost.gpus} GPU${cost.gpus === 1 ? '' : 's'}, ${hours(cost.gpuHours)} GPU-h spent`;
}

function hours(h: number): string {
  if (h < 0.01) {
    return '<0.01';
  }
  return h < 10 ? String(Math.round(h * 100) / 100) : String(Math.round(h * 10) / 10);
}

function duration(seconds: number): string {
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min`;
  }
  const h = Math.floor(minutes / 60);
  if (h < 48) {
    return minutes % 60 ? `${h} h ${minutes % 60} min` : `${h} h`;
  }
  return `${Math.round(h / 24)} days`;
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}
