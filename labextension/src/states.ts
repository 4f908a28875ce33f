/**
 * A deployment's state in words a researcher understands: Slurm's pending reasons explained,
 * elapsed times, the failure reason. Pure (type imports only): test/states.test.mjs.
 */
import type { DeploymentState, IDeployment, IReplica } from './types';

export const STATE_LABELS: Record<DeploymentState, string> = {
  queued: 'Queued',
  starting: 'Starting',
  ready: 'Ready',
  stopping: 'Stopping',
  stopped: 'Stopped',
  failed: 'Failed'
};

/** Slurm's pending reasons (squeue %r), in plain words. */
export const SLURM_REASONS: Record<string, string> = {
  None: 'the scheduler has not looked at the job yet',
  Resources: 'waiting for GPUs, CPUs or memory to become free',
  Priority: 'jobs with a higher priority are ahead in the queue',
  Dependency: 'waiting for another job to finish',
  DependencyNeverSatisfied: 'it depends on a job that failed: it will never start',
  BeginTime: 'it may not start before its requested start time',
  JobHeldUser: 'held by you (scontrol release lets it go)',
  JobHeldAdmin: 'held by an administrator',
  PartitionConfig: 'asks for more than the partition allows (CPUs, GPUs, memory or nodes)',
  PartitionTimeLimit: "its time limit is longer than the partition's maximum",
  PartitionNodeLimit: 'asks for more nodes than the partition allows',
  PartitionDown: 'the partition is down',
  PartitionInactive: 'the partition is inactive',
  ReqNodeNotAvail: 'the nodes it needs are not available (down, drained or reserved)',
  NodeDown: 'a node it needs is down',
  Reservation: 'waiting for its advance reservation to begin',
  Licenses: 'waiting for a license',
  InvalidAccount: 'the account is not valid for you',
  InvalidQOS: 'the QOS is not valid for you',
  QOSMaxGPUPerUserLimit: 'you already use as many GPUs as your QOS allows; it starts when one of your jobs ends',
  QOSMaxJobsPerUserLimit: 'you already run as many jobs as your QOS allows',
  QOSMaxSubmitJobPerUserLimit: 'you have as many jobs queued as your QOS allows',
  QOSMaxCpuPerUserLimit: 'you already use as many CPUs as your QOS allows',
  QOSMaxMemoryPerUser: 'you already use as much memory as your QOS allows',
  QOSMaxNodePerUserLimit: 'you already use as many nodes as your QOS allows',
  QOSMaxWallDurationPerJobLimit: "its time limit is longer than the QOS's maximum",
  QOSGrpGRES: "your QOS group's GPUs are all in use",
  QOSGrpCpuLimit: "your QOS group's CPUs are all in use",
  QOSGrpNodeLimit: "your QOS group's nodes are all in use",
  QOSResourceLimit: 'a limit of your QOS is reached',
  AssocGrpGRES: "your account's GPU share is in use",
  AssocGrpCpuLimit: "your account's CPU share is in use",
  AssocGrpJobsLimit: "your account runs as many jobs as it may",
  AssocMaxJobsLimit: 'you run as many jobs as your account allows',
  AssocGrpBillingMinutes: "your account's compute budget is used up",
  AssocGrpCPUMinutesLimit: "your account's CPU-minutes budget is used up",
  AssocGrpGRESMinutes: "your account's GPU-minutes budget is used up",
  launch_failed_requeued_held: 'the job failed to launch and is held: ask your administrators',
  BadConstraints: 'its constraints cannot be met by any node',
  Cleaning: 'waiting for the node to be cleaned after a previous job',
  FrontEndDown: 'the front end node is down',
  SystemFailure: 'a failure of the scheduler or the file system'
};

/** Slurm's reason with its explanation, e.g. `Resources: waiting for GPUs... to become free`. */
export function explainReason(reason: string | null | undefined): string | null {
  if (!reason) {
    return null;
  }
  const code = reason.trim();
  const known = SLURM_REASONS[code];
  if (known) {
    return `${code}: ${known}`;
  }
  // Families Slurm adds to over time: QOS/association limits on anything.
  if (/^QOS.*PerUser/.test(code)) {
    return `${code}: you have reached a per-user limit of your QOS`;
  }
  if (/^QOSGrp/.test(code)) {
    return `${code}: a limit shared by your QOS group is reached`;
  }
  if (/^Assoc/.test(code)) {
    return `${code}: a limit of your account is reached`;
  }
  return code;
}

/** `42s`, `3m 07s`, `2h 05m`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  }
  const h = Math.floor(m / 60);
  if (h < 48) {
    return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  }
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** `in 5m 00s`, `2m 10s ago`, `now`, or a date for what is over a day away. */
export function formatWhen(epochSeconds: number, nowSeconds: number): string {
  const delta = epochSeconds - nowSeconds;
  if (Math.abs(delta) < 60) {
    return delta >= 0 ? 'now' : 'just now';
  }
  if (delta > 0 && delta < 86400) {
    return `in ${formatDuration(delta)}`;
  }
  if (delta < 0 && delta > -86400) {
    return `${formatDuration(-delta)} ago`;
  }
  return new Date(epochSeconds * 1000).toISOString().slice(0, 16).replace('T', ' ');
}

export interface IStateWords {
  /** One line under the model's name. */
  summary: string;
  /** Longer explanations (the reason explained, the estimated start...), one per line. */
  details: string[];
}

/** What a deployment is doing, in words, policies included; `now` in epoch seconds. */
export function describeDeployment(d: IDeployment, now: number): IStateWords {
  const words = describeState(d, now);
  return { ...words, details: [...words.details, ...describePolicies(d)] };
}

function describeState(d: IDeployment, now: number): IStateWords {
  const first = d.replicas[0] as IReplica | undefined;
  const reason = d.reason || first?.reason || null;
  switch (d.state) {
    case 'queued': {
      const details: string[] = [];
      const explained = explainReason(reason);
      const est = d.replicas.map(r => r.estimated_start).find(x => x);
      if (explained) {
        details.push(`Slurm: ${explained}`);
      }
      if (est) {
        details.push(`Slurm's estimated start: ${formatWhen(est, now)}`);
      }
      const waited = formatDuration(now - d.created);
      return {
        summary: reason
          ? `waiting in the queue (${reason}) · ${waited}`
          : `waiting in the queue · ${waited}`,
        details
      };
    }
    case 'starting': {
      const elapsed = d.replicas.map(r => r.elapsed).find(x => x != null);
      const where = first?.node ? ` on ${first.node}` : '';
      return {
        summary: `engine loading the model${where}${elapsed != null ? ` · ${formatDuration(elapsed)}` : ''}`,
        details: []
      };
    }
    case 'ready': {
      const ready = d.replicas.filter(r => r.state === 'ready');
      const nodes = Array.from(new Set(ready.map(r => r.node || r.host).filter(Boolean)));
      const count = d.replicas.length > 1 ? `${ready.length}/${d.replicas.length} replicas · ` : '';
      const since = ready.map(r => r.ready_at).find(x => x);
      return {
        summary: `${count}serving${nodes.length ? ` on ${nodes.join(', ')}` : ''}${since ? ` · up ${formatDuration(now - since)}` : ''}`,
        details: []
      };
    }
    case 'stopping':
      return { summary: 'cancelling the Slurm job', details: [] };
    case 'failed': {
      const codes = d.replicas.map(r => r.exit_code).filter(x => x != null && x !== 0);
      return {
        summary: reason || 'failed',
        details: codes.length ? [`exit code ${codes[0]}`] : []
      };
    }
    case 'stopped':
      return { summary: `${reason || 'stopped'} · launched ${formatWhen(d.created, now)}`, details: [] };
    default:
      return { summary: reason ?? '', details: [] };
  }
}

/**
 * What the lifecycle policies will do, where the server reports them: the idle-shutdown
 * countdown (or "pinned"), restarts so far, a renewal in progress, the server's note.
 */
export function describePolicies(d: IDeployment): string[] {
  const lines: string[] = [];
  const p = d.policy;
  if (p && d.state === 'ready') {
    if (p.pinned) {
      lines.push('pinned: never stopped for being idle');
    } else if (p.idle_stop_in != null && p.idle_timeout) {
      lines.push(
        (p.in_flight ?? 0) > 0
          ? `busy (${p.in_flight} request${p.in_flight === 1 ? '' : 's'}): idle shutdown waits`
          : `stops when idle: in ${formatDuration(p.idle_stop_in)} without a request`
      );
    }
  }
  if (p?.renewal) {
    lines.push(`renewal: ${p.renewal}`);
  }
  if (d.restarts) {
    lines.push(`restarted ${d.restarts} time${d.restarts === 1 ? '' : 's'} after a failure`);
  }
  if (d.note) {
    lines.push(d.note);
  }
  return lines;
}

/** One line per replica: job, node and its own state. */
export function describeReplica(r: IReplica): string {
  const parts = [r.job_id ? `job ${r.job_id}` : 'not submitted'];
  if (r.node) {
    parts.push(r.node);
  }
  if (r.reason) {
    parts.push(r.reason);
  }
  return parts.join(' · ');
}
