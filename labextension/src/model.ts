/**
 * The sidebar's state: catalog, deployments and scheduler health, refreshed by one poll loop.
 *
 * The loop polls every 2 s while the panel is visible and some deployment is queued, starting or
 * stopping; every 10 s while everything is stable; every 60 s while the panel or the browser tab
 * is hidden. Showing the panel or acting on a deployment refreshes at once.
 */
import { ISignal, Signal } from '@lumino/signaling';

import {
  ApiError,
  ICatalog,
  IDeployment,
  IHealth,
  ILaunchRequest,
  OsireApi,
  UNSTABLE_STATES
} from './api';

export const FAST_POLL_MS = 2000;
export const STABLE_POLL_MS = 10000;
export const HIDDEN_POLL_MS = 60000;
export const HEALTH_EVERY_MS = 30000;

export class OsireModel {
  constructor(
    readonly api: OsireApi,
    private readonly _isVisible: () => boolean
  ) {
    document.addEventListener('visibilitychange', this._onVisibility);
  }

  catalog: ICatalog | null = null;
  catalogError: string | null = null;
  deployments: IDeployment[] | null = null;
  deploymentsError: string | null = null;
  health: IHealth | null = null;
  healthError: string | null = null;
  /** Deployment ids with a stop request in flight. */
  readonly stopping = new Set<string>();

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** True while some deployment will change state by itself soon. */
  get busy(): boolean {
    return (this.deployments ?? []).some(d => UNSTABLE_STATES.has(d.state));
  }

  /** The delay before the next poll, from visibility and what is in flight. */
  nextDelay(): number {
    if (!this._isVisible() || document.visibilityState === 'hidden') {
      return HIDDEN_POLL_MS;
    }
    return this.busy ? FAST_POLL_MS : STABLE_POLL_MS;
  }

  /** Load everything once (catalog and health rarely change), then start polling. */
  async start(): Promise<void> {
    await Promise.all([
      this.refreshCatalog(),
      this.refreshHealth(),
      this.refresh()
    ]);
  }

  async refreshCatalog(): Promise<void> {
    try {
      this.catalog = await this.api.catalog();
      this.catalogError = null;
    } catch (error) {
      this.catalogError = (error as Error).message;
    }
    this._emit();
  }

  async refreshHealth(): Promise<void> {
    this._healthAt = Date.now();
    try {
      this.health = await this.api.health();
      this.healthError = null;
    } catch (error) {
      this.healthError = (error as Error).message;
    }
    this._emit();
  }

  /** Fetch deployments now and schedule the next poll. */
  async refresh(): Promise<void> {
    this._clearTimer();
    if (Date.now() - this._healthAt > HEALTH_EVERY_MS) {
      void this.refreshHealth(); // the footer shows the scheduler's last error, if any
    }
    const generation = ++this._generation;
    try {
      const deployments = await this.api.deployments();
      if (generation !== this._generation) {
        return; // a newer refresh started meanwhile; its answer wins
      }
      deployments.sort((a, b) => b.created - a.created);
      this.deployments = deployments;
      this.deploymentsError = null;
    } catch (error) {
      if (generation !== this._generation) {
        return;
      }
      this.deploymentsError = (error as Error).message;
    }
    this._emit();
    this._schedule();
  }

  /** Launch a model; rejects with an `ApiError` (its `param` names the bad field). */
  async launch(request: ILaunchRequest): Promise<IDeployment> {
    const deployment = await this.api.launch(request);
    await this.refresh();
    return deployment;
  }

  async stop(id: string): Promise<void> {
    this.stopping.add(id);
    this._emit();
    try {
      await this.api.stop(id);
    } catch (error) {
      this.deploymentsError =
        error instanceof ApiError ? error.message : String(error);
    } finally {
      this.stopping.delete(id);
      await this.refresh();
    }
  }

  /** Refresh at once (panel shown, browser tab back in front). */
  wake(): void {
    if (this._disposed) {
      return;
    }
    void this.refresh();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._clearTimer();
    document.removeEventListener('visibilitychange', this._onVisibility);
    Signal.clearData(this);
  }

  private _schedule(): void {
    if (this._disposed) {
      return;
    }
    this._clearTimer();
    this._timer = window.setTimeout(() => {
      this._timer = null;
      void this.refresh();
    }, this.nextDelay());
  }

  private _clearTimer(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _emit(): void {
    if (!this._disposed) {
      this._changed.emit();
    }
  }

  private _onVisibility = (): void => {
    if (document.visibilityState === 'visible' && this._isVisible()) {
      this.wake();
    }
  };

  private _changed = new Signal<this, void>(this);
  private _disposed = false;
  private _generation = 0;
  private _healthAt = 0;
  private _timer: number | null = null;
}
