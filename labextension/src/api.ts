/**
 * Typed client for the server extension's REST API under `<base_url>/osire/api`.
 *
 * Every call goes through `ServerConnection.makeRequest`, so the Jupyter token, the XSRF
 * cookie and JupyterHub's auth all work exactly as they do for JupyterLab's own requests.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import {
  IBatch,
  IBatchList,
  ICatalog,
  IDeployment,
  IEstimate,
  IHealth,
  ILaunchRequest,
  ILogs,
  IUsage
} from './types';

export * from './types';

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

  /** What a launch with this body would get (start, cost, limits); submits nothing. */
  estimate(request: ILaunchRequest): Promise<IEstimate> {
    return this._request<IEstimate>('api/deployments/estimate', {
      method: 'POST',
      body: JSON.stringify(request)
    });
  }

  /** Tokens, GPU hours and billing per model and UTC day from `since` (`YYYY-MM-DD`) on. */
  usage(since: string): Promise<IUsage> {
    return this._request<IUsage>(`api/usage?since=${encodeURIComponent(since)}`);
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

  /**
   * The engine's Prometheus text (`/metrics`) through the engine passthrough; null when the
   * engine has no such route (404), so the view shows nothing for it.
   */
  async engineMetrics(id: string, signal?: AbortSignal): Promise<string | null> {
    const url = URLExt.join(
      this.settings.baseUrl,
      'osire',
      'engines',
      encodeURIComponent(id),
      'metrics'
    );
    const response = await this._fetch(url, { signal });
    if (response.status === 404) {
      return null;
    }
    if (!response.ok) {
      throw await errorOf(response);
    }
    return response.text();
  }

  /**
   * `POST <base>/osire/v1/chat/completions`, as any OpenAI client calls it: the response's
   * body streams (the caller reads it); an error answer is thrown as an `ApiError`.
   */
  async chatStream(body: object, signal?: AbortSignal): Promise<Response> {
    const url = URLExt.join(this.settings.baseUrl, 'osire', 'v1', 'chat', 'completions');
    const response = await this._fetch(url, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
      signal
    });
    if (!response.ok) {
      throw await errorOf(response);
    }
    return response;
  }

  /** The user's batches, newest first (`GET <base>/osire/v1/batches`, the OpenAI list). */
  async batches(limit = 20): Promise<IBatch[]> {
    const body = await this._request<IBatchList>(`v1/batches?limit=${limit}`);
    return body.data;
  }

  /** Cancel a batch: its job ends, the answers so far are kept (a resume does the rest). */
  cancelBatch(id: string): Promise<IBatch> {
    return this._request<IBatch>(`v1/batches/${encodeURIComponent(id)}/cancel`, {
      method: 'POST'
    });
  }

  /** A new job for the requests a failed, expired or cancelled batch has not answered. */
  resumeBatch(id: string): Promise<IBatch> {
    return this._request<IBatch>(`v1/batches/${encodeURIComponent(id)}/resume`, {
      method: 'POST'
    });
  }

  /** Forget an ended batch and delete its results (ours: `DELETE <base>/osire/v1/batches/<id>`). */
  deleteBatch(id: string): Promise<{ id: string; deleted: boolean }> {
    return this._request(`v1/batches/${encodeURIComponent(id)}`, { method: 'DELETE' });
  }

  /** A file's bytes (`GET <base>/osire/v1/files/<id>/content`), e.g. a batch's results. */
  async fileContent(fileId: string): Promise<Blob> {
    const url = URLExt.join(
      this.settings.baseUrl,
      'osire',
      'v1',
      'files',
      encodeURIComponent(fileId),
      'content'
    );
    const response = await this._fetch(url, {});
    if (!response.ok) {
      throw await errorOf(response);
    }
    return response.blob();
  }

  health(): Promise<IHealth> {
    return this._request<IHealth>('api/health');
  }

  /** Absolute URL of the OpenAI-compatible proxy, as a notebook should call it. */
  openaiBaseUrl(): string {
    const url = URLExt.join(this.settings.baseUrl, 'osire', 'v1');
    return new URL(url, window.location.href).href;
  }

  private async _fetch(url: string, init: RequestInit): Promise<Response> {
    try {
      return await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      if ((error as Error)?.name === 'AbortError') {
        throw error;
      }
      throw new ApiError(
        `Cannot reach the Jupyter server: ${(error as Error).message ?? error}`,
        0
      );
    }
  }

  private async _request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'osire', path);
    const response = await this._fetch(url, init);
    if (!response.ok) {
      throw await errorOf(response);
    }
    const text = await response.text();
    try {
      return (text ? JSON.parse(text) : null) as T;
    } catch {
      throw new ApiError(`The server answered something that is not JSON: ${text.slice(0, 200)}`, response.status);
    }
  }
}

/** The `ApiError` for an error answer (`{"error": {...}}` or anything else). */
export async function errorOf(response: Response): Promise<ApiError> {
  const text = await response.text().catch(() => '');
  let body: any = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  const error = body?.error;
  if (error && typeof error.message === 'string') {
    return new ApiError(
      error.message,
      response.status,
      error.param ?? null,
      error.code != null ? String(error.code) : null
    );
  }
  return new ApiError(
    response.status === 404 && !body
      ? 'The jupyter-osire-llm server extension is not enabled on this server.'
      : `${response.status} ${response.statusText}`.trim(),
    response.status
  );
}
