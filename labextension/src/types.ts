/**
 * The REST API's JSON shapes (no runtime imports: the pure modules and their node tests use it).
 */

export type Resources = {
  gpus?: number;
  gpu_type?: string;
  cpus?: number;
  memory?: string;
  time?: string;
  partition?: string;
  account?: string;
  qos?: string;
  constraint?: string;
  nodes?: number;
  [key: string]: unknown;
};

export interface ICatalogModel {
  name: string;
  model: string;
  engine: string;
  description?: string;
  resources: Resources;
}

export interface ICatalog {
  models: ICatalogModel[];
  problems: string[];
}

export type DeploymentState =
  | 'queued'
  | 'starting'
  | 'ready'
  | 'stopping'
  | 'stopped'
  | 'failed';

export interface IReplica {
  index: number;
  job_id: string | null;
  state: DeploymentState;
  reason: string | null;
  node?: string | null;
  host?: string | null;
  port?: number | null;
  estimated_start?: number | null;
  elapsed?: number | null;
  exit_code?: number | null;
  log_tail?: string | null;
  scheduler_state?: string | null;
  started_at?: number | null;
  ready_at?: number | null;
  ended_at?: number | null;
}

export interface IDeployment {
  id: string;
  model: string;
  state: DeploymentState;
  reason: string | null;
  created: number;
  resources: Resources;
  replicas: IReplica[];
  updated?: number;
  stop_requested?: boolean;
  /** Lifecycle policies (README "Lifecycle policies"), where the server has them. */
  policy?: IPolicy | null;
  restarts?: number;
  failures?: number;
  stop_reason?: string | null;
  note?: string | null;
}

export interface IPolicy {
  idle_timeout?: number | null;
  idle_stop_in?: number | null;
  pinned?: boolean;
  last_used?: number | null;
  in_flight?: number;
  replicas_wanted?: number;
  renewal?: string | null;
}

export interface IHealth {
  status: string;
  version: string;
  scheduler: { name: string; reason?: string | null; last_error?: string | null };
}

export interface ILaunchRequest {
  model: string;
  replicas?: number;
  resources?: Resources;
}

export interface ILogs {
  replicas: { index: number; job_id: string | null; lines: string[] }[];
}

/** States that will change by themselves soon: poll fast while any deployment is in one. */
export const UNSTABLE_STATES: ReadonlySet<DeploymentState> = new Set([
  'queued',
  'starting',
  'stopping'
]);

/** States a deployment never leaves. */
export const TERMINAL_STATES: ReadonlySet<DeploymentState> = new Set([
  'stopped',
  'failed'
]);
