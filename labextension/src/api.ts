/**
 * Typed client for the server extension's REST API under `<base_url>/osire/api`.
 *
 * Every call goes through `ServerConnection.makeRequest`, so the Jupyter token, the XSRF
 * cookie and JupyterHub's auth all work exactly as they do for JupyterLab's own requests.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

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
}

export interface IDeployment {
  id: string;
  model: string;
  state: DeploymentState;
  reason: string | null;
  created: number;
  resources: Resources;
  replicas: IReplica[];
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

/**
 * An error answered by the API (`{"error": {"message", "type", "code", "param"}}`), or a
 * network failure (status 0).
 */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly param: string | null = null,
    readonly code: string | null = null
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export class OsireApi {
  constructor(
    readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()
  ) {}

  catalog(): Promise<ICatalog> {
    return this._request<ICatalog>('api/catalog');
  }

  async deployments(): Promise<IDeployment[]> {
    const body = await this._request<{ deployments: IDeployment[] }>(
      'api/deployments'
    );
    return body.deployments;
  }

  launch(request: ILaunchRequest): Promise<IDeployment> {
    return this._request<IDeployment>('api/deployments', {
      method: 'POST',
      body: JSON.stringify(request)
    });
  }

  stop(id: string): Promise<IDeployment> {
    return this._request<IDeployment>(
      `api/deployments/${encodeURIComponent(id)}`,
      { method: 'DELETE' }
    );
  }

  logs(id: string, tail = 50): Promise<ILogs> {
    return this._request<ILogs>(
      `api/deployments/${encodeURIComponent(id)}/logs?tail=${tail}`
    );
  }

  health(): Promise<IHealth> {
    return this._request<IHealth>('api/health');
  }

  /** Absolute URL of the OpenAI-compatible proxy, as a notebook should call it. */
  openaiBaseUrl(): string {
    const url = URLExt.join(this.settings.baseUrl, 'osire', 'v1');
    return new URL(url, window.location.href).href;
  }

  private async _request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'osire', path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new ApiError(
        `Cannot reach the Jupyter server: ${(error as Error).message ?? error}`,
        0
      );
    }
    const text = await response.text();
    let body: any = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = null;
      }
    }
    if (!response.ok) {
      const error = body?.error;
      if (error && typeof error.message === 'string') {
        throw new ApiError(
          error.message,
          response.status,
          error.param ?? null,
          error.code != null ? String(error.code) : null
        );
      }
      throw new ApiError(
        response.status === 404 && !body
          ? 'The jupyter-osire-llm server extension is not enabled on this server.'
          : `${response.status} ${response.statusText}`.trim(),
        response.status
      );
    }
    return body as T;
  }
}
