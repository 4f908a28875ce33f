/**
 * A batch in words and figures for the sidebar: its status, progress (done/total, failed), what
 * it is waiting for or why it ended, and which actions apply. Pure (type imports only):
 * test/batches.test.mjs.
 */
import type { BatchStatus, IBatch } from './types';

export const BATCH_STATUS_LABELS: Record<BatchStatus, string> = {
  validating: 'Validating',
  queued: 'Queued',
  in_progress: 'Running',
  cancelling: 'Cancelling',
  completed: 'Completed',
  failed: 'Failed',
  expired: 'Expired',
  cancelled: 'Cancelled'
};

/** Statuses that change by themselves (the same set as types.ts's LIVE_BATCH_STATES). */
const LIVE: ReadonlySet<string> = new Set(['validating', 'queued', 'in_progress', 'cancelling']);

export function isLiveBatch(b: IBatch): boolean {
  return LIVE.has(b.status);
}

export function batchStatusLabel(status: string): string {
  return BATCH_STATUS_LABELS[status as BatchStatus] ?? status;
}

export interface IBatchProgress {
  total: number;
  completed: number;
  failed: number;
  /** Answered either way (completed + failed), what the bar shows. */
  answered: number;
  /** Shares of the bar, 0 to 100: answered successfully, and failed. */
  completedPercent: number;
  failedPercent: number;
  /** `12/20`: completed of the total, as `jupyter osire batches` says it. */
  text: string;
  /** `1 failed`, or null when none failed. */
  failedText: string | null;
  /** For screen readers: `12 of 20 requests done, 1 failed`. */
  valueText: string;
}

export function batchProgress(b: IBatch): IBatchProgress {
  const counts = b.request_counts ?? { total: 0, completed: 0, failed: 0 };
  const total = Math.max(0, counts.total || 0);
  const completed = Math.min(total, Math.max(0, counts.completed || 0));
  const failed = Math.min(total - completed, Math.max(0, counts.failed || 0));
  const share = (n: number): number => (total > 0 ? Math.round((n / total) * 1000) / 10 : 0);
  const failedText = failed > 0 ? `${failed} failed` : null;
  return {
    total,
    completed,
    failed,
    answered: completed + failed,
    completedPercent: share(completed),
    failedPercent: share(failed),
    text: `${completed}/${total}`,
    failedText,
    valueText: `${completed} of ${total} request${total === 1 ? '' : 's'} done` +
      (failedText ? `, ${failedText}` : '')
  };
}

/** The wording helpers of states.ts, passed in so this module imports nothing at run time. */
export interface IWordHelpers {
  explainReason(reason: string | null | undefined): string | null;
  formatDuration(seconds: number): string;
}

export interface IBatchWords {
  /** One line under the model's name. */
  summary: string;
  /** Longer explanations, one per line. */
  details: string[];
}

/** What a batch is doing or why it ended, in words; `now` in epoch seconds. */
export function describeBatch(b: IBatch, now: number, words: IWordHelpers): IBatchWords {
  const extra = b.osire ?? null;
  const reason = extra?.reason || null;
  const jobs = extra?.jobs ?? [];
  // After a resume the record keeps the first run's times: no elapsed time then.
  const resumed = jobs.length > 1;
  const left = extra?.left ?? Math.max(
    0, b.request_counts.total - b.request_counts.completed - b.request_counts.failed);
  const details: string[] = [];
  if (resumed && isLiveBatch(b)) {
    details.push(`resumed: run ${jobs.length}, ${plural(left, 'request')} left`);
  }
  switch (b.status) {
    case 'validating':
      return { summary: 'checking the input and submitting the job', details };
    case 'queued': {
      const explained = words.explainReason(reason);
      if (explained) {
        details.push(`Slurm: ${explained}`);
      }
      const waited = resumed ? '' : ` · ${words.formatDuration(now - b.created_at)}`;
      return {
        summary: `waiting in the queue${reason ? ` (${reason})` : ''}${waited}`,
        details
      };
    }
    case 'in_progress': {
      const where = extra?.node ? ` on ${extra.node}` : '';
      const since = !resumed && b.in_progress_at
        ? ` · ${words.formatDuration(now - b.in_progress_at)}`
        : '';
      return { summary: `answering requests${where}${since}`, details };
    }
    case 'cancelling':
      return { summary: 'cancelling the Slurm job; the answers so far are kept', details };
    case 'completed': {
      const failed = b.request_counts.failed;
      return {
        summary: failed > 0
          ? `finished: ${plural(failed, 'request')} refused by the engine (see the errors file)`
          : 'finished: every request answered',
        details
      };
    }
    case 'failed':
    case 'expired':
    case 'cancelled': {
      if (left > 0 && extra?.resumable) {
        details.push(`${plural(left, 'request')} left: Resume answers only those`);
      }
      return { summary: reason || b.status, details };
    }
    default:
      return { summary: reason ?? String(b.status), details };
  }
}

export interface IBatchActions {
  cancel: boolean;
  resume: boolean;
  /** The answers so far (complete lines) can be downloaded. */
  results: boolean;
  /** The requests the engine refused can be downloaded. */
  errors: boolean;
  /** The batch has ended: it can be removed with its results. */
  remove: boolean;
}

/** Which buttons a batch gets; `pending` while a cancel or resume of it is in flight. */
export function batchActions(b: IBatch, pending = false): IBatchActions {
  return {
    cancel: !pending && isLiveBatch(b) && b.status !== 'cancelling',
    resume: !pending && !isLiveBatch(b) && Boolean(b.osire?.resumable),
    results: Boolean(b.output_file_id),
    errors: Boolean(b.error_file_id),
    remove: !pending && !isLiveBatch(b)
  };
}

/** The name a downloaded result file gets: `<batch id>-output.jsonl`, safe as a file name. */
export function resultFileName(b: IBatch, kind: 'output' | 'errors'): string {
  const id = b.id.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[.]+/, '') || 'batch';
  return `${id}-${kind}.jsonl`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** Batches live in `before` that have ended in `after` (none on the first load: `before` null). */
export function endedBatches(before: IBatch[] | null, after: IBatch[]): IBatch[] {
  if (before === null) {
    return [];
  }
  const wasLive = new Set(before.filter(isLiveBatch).map(b => b.id));
  return after.filter(b => wasLive.has(b.id) && !isLiveBatch(b));
}

/** What the notification of an ended batch says, and how loud it is. */
export function batchEndNotice(b: IBatch): { kind: 'success' | 'warning' | 'error'; text: string } {
  const p = batchProgress(b);
  const head = `Batch of ${b.model ?? 'a model'} ${batchStatusLabel(b.status).toLowerCase()}: ` +
    `${p.text} done${p.failedText ? `, ${p.failedText}` : ''}`;
  if (b.status === 'completed') {
    return { kind: p.failed > 0 ? 'warning' : 'success', text: head };
  }
  const reason = b.osire?.reason;
  return { kind: b.status === 'cancelled' ? 'warning' : 'error', text: reason ? `${head} (${reason})` : head };
}
