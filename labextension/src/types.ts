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

/** What the model's files say about its size; fields the files do not give are absent. */
export interface IModelSize {
  parameters?: number;
  weight_bytes?: number;
  kv_bytes_per_token?: number;
  context?: number;
  dtype?: string;
  min_gpus?: number;
  options?: { gpu_type: string; gpus: number; nodes: number; context_tokens?: number }[];
  summary?: string;
  note?: string;
}

export interface ICatalogModel {
  name: string;
  model: string;
  engine: string;
  description?: string;
  resources: Resources;
  size?: IModelSize;
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
  /** End of the last inference request (epoch seconds; the policy view has it too). */
  last_used?: number | null;
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
  /** The state file: where it is and what went wrong with it (damaged, unreadable rows). */
  state?: { path: string; problems: string[] };
}

export interface ILaunchRequest {
  model: string;
  replicas?: number;
  resources?: Resources;
  force?: boolean;
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

/** An offline batch's status (the OpenAI Batch API's, plus `queued`: waiting in Slurm). */
export type BatchStatus =
  | 'validating'
  | 'queued'
  | 'in_progress'
  | 'cancelling'
  | 'completed'
  | 'failed'
  | 'expired'
  | 'cancelled';

/** Our own details of a batch (`batch.osire`): Slurm's side of it. */
export interface IBatchOsire {
  /** Slurm's pending reason while queued, or why the batch ended. */
  reason: string | null;
  job_id: string | null;
  /** Every job the batch ran as (a resume adds one). */
  jobs?: string[];
  scheduler_state?: string | null;
  node?: string | null;
  resources?: Resources;
  /** Requests with no answer yet. */
  left?: number;
  /** Failed, expired or cancelled with requests left: a resume answers the rest. */
  resumable?: boolean;
  /** The engine's last log lines, when the batch failed. */
  log_tail?: string | null;
}

/** A batch as `GET <base>/osire/v1/batches` lists it (the OpenAI Batch object). */
export interface IBatch {
  id: string;
  object?: 'batch';
  endpoint: string;
  status: BatchStatus;
  errors?: { data: { code: string; message: string }[] } | null;
  input_file_id: string;
  completion_window?: string;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at?: number | null;
  expires_at?: number | null;
  completed_at?: number | null;
  failed_at?: number | null;
  expired_at?: number | null;
  cancelling_at?: number | null;
  cancelled_at?: number | null;
  request_counts: { total: number; completed: number; failed: number };
  metadata?: Record<string, string> | null;
  model: string;
  osire?: IBatchOsire | null;
}

export interface IBatchList {
  object: 'list';
  data: IBatch[];
  has_more: boolean;
}

/** Batch statuses that change by themselves: poll fast while a batch is in one. */
export const LIVE_BATCH_STATES: ReadonlySet<BatchStatus> = new Set([
  'validating',
  'queued',
  'in_progress',
  'cancelling'
]);

/** `POST /osire/api/deployments/estimate`: what a launch would get, nothing submitted. */
export interface IEstimate {
  model?: string;
  replicas?: number;
  resources?: Resources;
  /** The model's size against the GPUs (null: not known). */
  fits: boolean | null;
  fit_reason?: string | null;
  within_limits: boolean;
  limits_reason?: string | null;
  /** ISO time from `sbatch --test-only`, or null with `start_reason`. */
  start: string | null;
  start_reason?: string | null;
  nodes?: string | null;
  partition?: string | null;
  hours?: number;
  gpu_hours: number;
  billing?: {
    units: number;
    unit_hours: number;
    price?: number;
    currency?: string;
  } | null;
  summary?: string;
  /** Why a client should ask before launching (null: go ahead). */
  confirm?: string | null;
}

/** One row of `GET /osire/api/usage`: a model's use on one UTC day. */
export interface IUsageRow {
  model: string;
  day: string;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  gpu_hours: number;
  billing: number | null;
}

export interface IUsage {
  since: string;
  usage: IUsageRow[];
  totals: Partial<Omit<IUsageRow, 'model' | 'day'>>;
}
