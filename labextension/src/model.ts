/**
 * The sidebar's state: catalog, deployments, batches and scheduler health, refreshed by one poll
 * loop (each poll lists the deployments and the batches: two GETs) at the pace `cadence.ts` sets.
 * Showing the panel or acting on a deployment refreshes at once.
 *
 * A second loop scrapes each ready deployment's engine metrics (`/metrics` through the engine
 * passthrough) while the panel is visible, keeping the last `metricsWindow` minutes for the
 * sparklines.
 */
import { ISignal, Signal } from '@lumino/signaling';

import {
  ApiError,
  DeploymentState,
  IBatch,
  ICatalog,
  IDeployment,
  IHealth,
  ILaunchRequest,
  LIVE_BATCH_STATES,
  OsireApi,
  UNSTABLE_STATES
} from './api';
import { endedBatches } from './batches';
import { healthDue, metricsDelay, pollDelay } from './cadence';
import { MetricsHistory, parsePrometheus, vllmSnapshot } from './metrics';
import { DEFAULT_SETTINGS, IOsireSettings } from './settings';

/** A deployment whose state changed between two refreshes. */
export interface IStateChange {
  deployment: IDeployment;
  previous: DeploymentState;
}

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
  /** The user's batches, newest first (null until the first answer). */
  batches: IBatch[] | null = null;
  /** Why the batches could not be listed (shown in their section; the deployments go on). */
  batchesError: string | null = null;
  /** Batch ids with a cancel or resume in flight. */
  readonly batchPending = new Set<string>();
  settings: IOsireSettings = { ...DEFAULT_SETTINGS };
  /** Engine metrics per deployment id (only engines that export vLLM's figures). */
  readonly metrics = new Map<string, MetricsHistory>();

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Deployments that changed state (not on the first load). */
  get stateChanged(): ISignal<this, IStateChange> {
    return this._stateChanged;
  }

  /** A batch that ended (completed, failed, expired, cancelled) since the last refresh. */
  get batchEnded(): ISignal<this, IBatch> {
    return this._batchEnded;
  }

  /** A new problem of the server or the scheduler (a message to notify once). */
  get problem(): ISignal<this, string> {
    return this._problem;
  }

  get metricsChanged(): ISignal<this, void> {
    return this._metricsChanged;
  }

  configure(settings: Partial<IOsireSettings>): void {
    this.settings = { ...this.settings, ...settings };
    for (const history of this.metrics.values()) {
      history.windowMs = this.settings.metricsWindow * 60000;
    }
    this._emit();
    this.wake();
  }

  /** A deployment by id or, failing that, the newest live one serving `model`. */
  find(idOrModel: string): IDeployment | undefined {
    const all = this.deployments ?? [];
    return (
      all.find(d => d.id === idOrModel) ??
      all.find(d => d.model === idOrModel && d.state === 'ready') ??
      all.find(d => d.model === idOrModel)
    );
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** True while some deployment or batch will change state by itself soon. */
  get busy(): boolean {
    return (
      (this.deployments ?? []).some(d => UNSTABLE_STATES.has(d.state)) ||
      (this.batches ?? []).some(b => LIVE_BATCH_STATES.has(b.status))
    );
  }

  /** The delay before the next poll, from visibility and what is in flight. */
  nextDelay(): number {
    return pollDelay({
      visible: this._visible(),
      busy: this.busy,
      refreshInterval: this.settings.refreshInterval
    });
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
      const schedulerError = this.health.scheduler.last_error ?? null;
      if (schedulerError && schedulerError !== this._lastSchedulerError) {
        this._problem.emit(`Scheduler (${this.health.scheduler.name}): ${schedulerError}`);
      }
      this._lastSchedulerError = schedulerError;
    } catch (error) {
      this.healthError = (error as Error).message;
    }
    this._emit();
  }

  /** Fetch deployments and batches now and schedule the next poll. */
  async refresh(): Promise<void> {
    this._clearTimer();
    if (healthDue(Date.now(), this._healthAt)) {
      void this.refreshHealth(); // the footer shows the scheduler's last error, if any
    }
    const generation = ++this._generation;
    // Both at once; a failure of one never holds back or breaks the other.
    const [listed, batches] = await Promise.all([
      settle(this.api.deployments()),
      settle(this.api.batches())
    ]);
    if (generation !== this._generation) {
      return; // a newer refresh started meanwhile; its answers win
    }
    if (batches.ok) {
      for (const ended of endedBatches(this.batches, batches.value)) {
        this._batchEnded.emit(ended);
      }
      this.batches = batches.value;
      this.batchesError = null;
    } else {
      this.batchesError = (batches.error as Error)?.message ?? String(batches.error);
    }
    try {
      if (!listed.ok) {
        throw listed.error;
      }
      const deployments = listed.value;
      deployments.sort((a, b) => b.created - a.created);
      const before = new Map((this.deployments ?? []).map(d => [d.id, d.state]));
      const first = this.deployments === null;
      this.deployments = deployments;
      this.deploymentsError = null;
      for (const id of this.metrics.keys()) {
        if (!deployments.some(d => d.id === id && d.state === 'ready')) {
          this.metrics.delete(id);
        }
      }
      if (!first) {
        for (const d of deployments) {
          const previous = before.get(d.id);
          if (previous !== undefined && previous !== d.state) {
            this._stateChanged.emit({ deployment: d, previous });
          }
        }
      }
    } catch (error) {
      const message = (error as Error).message;
      if (message !== this.deploymentsError) {
        this._problem.emit(`Cannot list your LLM deployments: ${message}`);
      }
      this.deploymentsError = message;
    }
    this._emit();
    this._schedule();
    this._scheduleMetrics(0);
  }

  /** Scrape every ready engine's metrics once. */
  async scrapeMetrics(): Promise<void> {
    const ready = (this.deployments ?? []).filter(d => d.state === 'ready');
    await Promise.all(
      ready.map(async d => {
        let text: string | null = null;
        try {
          text = await this.api.engineMetrics(d.id);
        } catch {
          return; // a passing failure: the sparkline simply has no point for now
        }
        const snapshot = text === null ? null : vllmSnapshot(parsePrometheus(text));
        if (snapshot === null) {
          this.metrics.delete(d.id); // not a vLLM engine (or no /metrics): show nothing
          return;
        }
        let history = this.metrics.get(d.id);
        if (!history) {
          history = new MetricsHistory(this.settings.metricsWindow * 60000);
          this.metrics.set(d.id, history);
        }
        history.add(Date.now(), snapshot);
      })
    );
    if (!this._disposed) {
      this._metricsChanged.emit();
    }
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
      const message = error instanceof ApiError ? error.message : String(error);
      this._problem.emit(`Stop refused: ${message}`);
    } finally {
      this.stopping.delete(id);
      await this.refresh();
    }
  }

  /** Cancel a batch (its answers so far are kept); a refusal is notified. */
  cancelBatch(id: string): Promise<void> {
    return this._batchAction(id, 'Cancel', () => this.api.cancelBatch(id));
  }

  /** Resume a failed, expired or cancelled batch for the requests it has left. */
  resumeBatch(id: string): Promise<void> {
    return this._batchAction(id, 'Resume', () => this.api.resumeBatch(id));
  }

  /** Remove an ended batch with its results (the caller has asked the user and shows its own
   * progress: `batchPending` means a cancel or resume). */
  removeBatch(id: string): Promise<void> {
    return this._batchAction(id, 'Remove', () => this.api.deleteBatch(id), false);
  }

  private async _batchAction(
    id: string,
    what: string,
    action: () => Promise<unknown>,
    pending = true
  ): Promise<void> {
    if (pending) {
      this.batchPending.add(id);
      this._emit();
    }
    try {
      await action();
    } catch (error) {
      const message = error instanceof ApiError ? error.message : String(error);
      this._problem.emit(`${what} refused: ${message}`);
    } finally {
      this.batchPending.delete(id);
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
    if (this._metricsTimer !== null) {
      window.clearTimeout(this._metricsTimer);
    }
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

  /** Keep one metrics loop running while the panel shows a ready deployment. */
  private _scheduleMetrics(delay: number): void {
    if (this._disposed || this._metricsTimer !== null || this._metricsBusy) {
      return;
    }
    if (!this._visible() || !(this.deployments ?? []).some(d => d.state === 'ready')) {
      return;
    }
    this._metricsTimer = window.setTimeout(async () => {
      this._metricsTimer = null;
      this._metricsBusy = true;
      try {
        await this.scrapeMetrics();
      } finally {
        this._metricsBusy = false;
      }
      this._scheduleMetrics(metricsDelay(this.settings.metricsInterval));
    }, delay);
  }

  /** The panel is shown and the browser tab is not hidden. */
  private _visible(): boolean {
    return this._isVisible() && document.visibilityState !== 'hidden';
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
  private _stateChanged = new Signal<this, IStateChange>(this);
  private _batchEnded = new Signal<this, IBatch>(this);
  private _problem = new Signal<this, string>(this);
  private _metricsChanged = new Signal<this, void>(this);
  private _lastSchedulerError: string | null = null;
  private _metricsTimer: number | null = null;
  private _metricsBusy = false;
  private _disposed = false;
  private _generation = 0;
  private _healthAt = 0;
  private _timer: number | null = null;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** A promise's outcome as a value (never rejects). */
async function settle<T>(promise: Promise<T>): Promise<Settled<T>> {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    return { ok: false, error };
  }
}
