/**
 * The "LLMs" sidebar: the site catalog with a Launch button per model, the user's deployments
 * with their state, and the scheduler backend in the footer.
 */
import { Clipboard, Notification } from '@jupyterlab/apputils';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import {
  ApiError,
  DeploymentState,
  ICatalogModel,
  IDeployment,
  IReplica,
  Resources,
  TERMINAL_STATES
} from './api';
import { OsireModel } from './model';
import { openaiSnippet } from './snippet';

/** The resource fields a user may change from the sidebar; the server validates the rest. */
const EDITABLE: { key: 'gpus' | 'time' | 'partition'; label: string; hint: string }[] = [
  { key: 'gpus', label: 'GPUs', hint: 'per replica' },
  { key: 'time', label: 'Time', hint: 'HH:MM:SS or D-HH:MM:SS' },
  { key: 'partition', label: 'Partition', hint: 'Slurm partition' }
];

const STATE_LABELS: Record<DeploymentState, string> = {
  queued: 'Queued',
  starting: 'Starting',
  ready: 'Ready',
  stopping: 'Stopping',
  stopped: 'Stopped',
  failed: 'Failed'
};

export class OsireSidebar extends ReactWidget {
  constructor(
    readonly model: OsireModel,
    private readonly _token: string
  ) {
    super();
    this.addClass('jp-OsireSidebar');
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.wake();
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => <SidebarView model={this.model} token={this._token} />}
      </UseSignal>
    );
  }
}

function SidebarView(props: { model: OsireModel; token: string }): JSX.Element {
  const { model } = props;
  const live = (model.deployments ?? []).filter(d => !TERMINAL_STATES.has(d.state));
  const ended = (model.deployments ?? []).filter(d => TERMINAL_STATES.has(d.state));
  return (
    <div className="jp-OsireSidebar-content">
      <header className="jp-OsireSidebar-header">
        <h2 className="jp-OsireSidebar-title">LLMs</h2>
        <button
          type="button"
          className="jp-OsireSidebar-iconButton"
          aria-label="Refresh"
          title="Refresh"
          onClick={() => {
            void model.refreshCatalog();
            void model.refreshHealth();
            model.wake();
          }}
        >
          ↻
        </button>
      </header>

      <section className="jp-OsireSidebar-section" aria-labelledby="osire-deployments-h">
        <h3 id="osire-deployments-h" className="jp-OsireSidebar-sectionTitle">
          Running
        </h3>
        <ListStatus
          error={model.deploymentsError}
          loaded={model.deployments !== null}
          empty={live.length === 0}
          emptyText="Nothing running. Launch a model below."
        />
        <ul className="jp-OsireSidebar-list" aria-live="polite">
          {live.map(d => (
            <DeploymentItem key={d.id} deployment={d} model={model} token={props.token} />
          ))}
        </ul>
      </section>

      <section className="jp-OsireSidebar-section" aria-labelledby="osire-catalog-h">
        <h3 id="osire-catalog-h" className="jp-OsireSidebar-sectionTitle">
          Models
        </h3>
        <ListStatus
          error={model.catalogError}
          loaded={model.catalog !== null}
          empty={(model.catalog?.models ?? []).length === 0}
          emptyText="The site catalog has no models."
        />
        <ul className="jp-OsireSidebar-list">
          {(model.catalog?.models ?? []).map(m => (
            <CatalogItem key={m.name} entry={m} model={model} />
          ))}
        </ul>
        {(model.catalog?.problems ?? []).length > 0 && (
          <details className="jp-OsireSidebar-problems">
            <summary>
              {model.catalog!.problems.length} catalog problem
              {model.catalog!.problems.length === 1 ? '' : 's'}
            </summary>
            <ul>
              {model.catalog!.problems.map((p, i) => (
                <li key={i}>{p}</li>
              ))}
            </ul>
          </details>
        )}
      </section>

      {ended.length > 0 && (
        <FinishedSection deployments={ended} model={model} token={props.token} />
      )}

      <footer className="jp-OsireSidebar-footer">
        {model.health ? (
          <span title={model.health.scheduler.reason ?? ''}>
            Scheduler: <strong>{model.health.scheduler.name}</strong>
            {model.health.scheduler.last_error && (
              <span className="jp-OsireSidebar-footerWarn" title={model.health.scheduler.last_error}>
                {' '}
                ⚠ {model.health.scheduler.last_error}
              </span>
            )}
            <span className="jp-OsireSidebar-version"> · v{model.health.version}</span>
          </span>
        ) : (
          <span className="jp-OsireSidebar-footerWarn">
            {model.healthError ? `Server: ${model.healthError}` : 'Connecting…'}
          </span>
        )}
      </footer>
    </div>
  );
}

/** The line above a list: its load error, "Loading…", or what an empty list means. */
function ListStatus(props: {
  error: string | null | undefined;
  loaded: boolean;
  empty: boolean;
  emptyText: string;
}): JSX.Element {
  return (
    <>
      {props.error && (
        <p className="jp-OsireSidebar-error" role="alert">
          {props.error}
        </p>
      )}
      {!props.loaded && !props.error && <p className="jp-OsireSidebar-empty">Loading…</p>}
      {props.loaded && props.empty && (
        <p className="jp-OsireSidebar-empty">{props.emptyText}</p>
      )}
    </>
  );
}

/** Stopped and failed deployments, newest first; open while one ended recently. */
function FinishedSection(props: {
  deployments: IDeployment[];
  model: OsireModel;
  token: string;
}): JSX.Element {
  const recent = props.deployments.some(d => Date.now() / 1000 - d.created < 3600);
  const [open, setOpen] = React.useState(recent);
  return (
    <section className="jp-OsireSidebar-section" aria-label="Finished deployments">
      <details
        className="jp-OsireSidebar-history"
        open={open}
        onToggle={e => setOpen((e.currentTarget as HTMLDetailsElement).open)}
      >
        <summary className="jp-OsireSidebar-sectionTitle">
          Finished ({props.deployments.length})
        </summary>
        <ul className="jp-OsireSidebar-list">
          {props.deployments.slice(0, 20).map(d => (
            <DeploymentItem key={d.id} deployment={d} model={props.model} token={props.token} />
          ))}
        </ul>
      </details>
    </section>
  );
}

function CatalogItem(props: { entry: ICatalogModel; model: OsireModel }): JSX.Element {
  const { entry, model } = props;
  const defaults = entry.resources ?? {};
  const [values, setValues] = React.useState<Record<string, string>>(() =>
    Object.fromEntries(EDITABLE.map(f => [f.key, defaults[f.key] != null ? String(defaults[f.key]) : '']))
  );
  const [open, setOpen] = React.useState(false);
  const [busy, setBusy] = React.useState(false);
  const [error, setError] = React.useState<ApiError | null>(null);
  const id = domId(entry.name);

  const fieldError = (key: string): string | null =>
    error && error.param === `resources.${key}` ? error.message : null;
  const generalError =
    error && !EDITABLE.some(f => error.param === `resources.${f.key}`) ? error.message : null;

  const launch = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    const resources: Resources = {};
    for (const f of EDITABLE) {
      const value = values[f.key].trim();
      const initial = defaults[f.key] != null ? String(defaults[f.key]) : '';
      if (value !== initial && value !== '') {
        (resources as Record<string, unknown>)[f.key] = f.key === 'gpus' && /^\d+$/.test(value) ? Number(value) : value;
      }
    }
    try {
      await model.launch({
        model: entry.name,
        ...(Object.keys(resources).length ? { resources } : {})
      });
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(String(e), 0);
      setError(err);
      if (err.param && err.param.startsWith('resources.')) {
        setOpen(true);
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <li className="jp-OsireSidebar-card jp-OsireSidebar-model" data-model={entry.name}>
      <div className="jp-OsireSidebar-row">
        <div className="jp-OsireSidebar-main">
          <div className="jp-OsireSidebar-name" title={entry.model}>
            {entry.name}
          </div>
          {entry.description && (
            <div className="jp-OsireSidebar-description">{entry.description}</div>
          )}
          <div className="jp-OsireSidebar-meta">{summarize(defaults, entry.engine)}</div>
        </div>
        <button
          type="button"
          className="jp-OsireSidebar-button jp-mod-accept"
          aria-label={`Launch ${entry.name}`}
          disabled={busy}
          onClick={() => void launch()}
        >
          {busy ? 'Launching…' : 'Launch'}
        </button>
      </div>
      <details
        className="jp-OsireSidebar-resources"
        open={open}
        onToggle={e => setOpen((e.currentTarget as HTMLDetailsElement).open)}
      >
        <summary>Resources</summary>
        <div className="jp-OsireSidebar-fields">
          {EDITABLE.map(f => {
            const ferr = fieldError(f.key);
            const inputId = `${id}-${f.key}`;
            return (
              <div className="jp-OsireSidebar-field" key={f.key}>
                <label htmlFor={inputId}>{f.label}</label>
                <input
                  id={inputId}
                  className={`jp-OsireSidebar-input${ferr ? ' jp-mod-invalid' : ''}`}
                  type={f.key === 'gpus' ? 'number' : 'text'}
                  min={f.key === 'gpus' ? 0 : undefined}
                  name={f.key}
                  placeholder={f.hint}
                  value={values[f.key]}
                  aria-invalid={ferr ? true : undefined}
                  aria-describedby={ferr ? `${inputId}-error` : undefined}
                  onChange={e => {
                    const value = e.currentTarget.value;
                    setValues(v => ({ ...v, [f.key]: value }));
                    if (ferr) {
                      setError(null);
                    }
                  }}
                  onKeyDown={e => {
                    if (e.key === 'Enter') {
                      void launch();
                    }
                  }}
                />
                {ferr && (
                  <div id={`${inputId}-error`} className="jp-OsireSidebar-fieldError" role="alert">
                    {ferr}
                  </div>
                )}
              </div>
            );
          })}
        </div>
      </details>
      {generalError && (
        <div className="jp-OsireSidebar-error" role="alert">
          {generalError}
        </div>
      )}
    </li>
  );
}

function DeploymentItem(props: {
  deployment: IDeployment;
  model: OsireModel;
  token: string;
}): JSX.Element {
  const { deployment: d, model, token } = props;
  const stopping = model.stopping.has(d.id) || d.state === 'stopping';
  const terminal = TERMINAL_STATES.has(d.state);
  const [copied, setCopied] = React.useState(false);

  const copy = (): void => {
    Clipboard.copyToSystem(openaiSnippet(model.api.openaiBaseUrl(), d.model, token));
    setCopied(true);
    Notification.success(`OpenAI snippet for ${d.model} copied to the clipboard`, {
      autoClose: 3000
    });
    window.setTimeout(() => setCopied(false), 2000);
  };

  return (
    <li
      className={`jp-OsireSidebar-card jp-OsireSidebar-deployment jp-mod-${d.state}`}
      data-deployment={d.id}
      data-state={d.state}
    >
      <div className="jp-OsireSidebar-row jp-OsireSidebar-titleRow">
        <div className="jp-OsireSidebar-name" title={`${d.model} (deployment ${d.id})`}>
          {d.model}
        </div>
        <StateBadge state={d.state} />
      </div>
      <div className="jp-OsireSidebar-meta">
        <span className="jp-OsireSidebar-detail">{describe(d)}</span>
      </div>
      {(d.state === 'ready' || !terminal) && (
        <div className="jp-OsireSidebar-actions">
          {d.state === 'ready' && (
            <button
              type="button"
              className="jp-OsireSidebar-button"
              aria-label={`Copy OpenAI snippet for ${d.model}`}
              title="Copy Python code that calls this model with the OpenAI client"
              onClick={copy}
            >
              {copied ? 'Copied ✓' : 'Copy snippet'}
            </button>
          )}
          {!terminal && (
            <button
              type="button"
              className="jp-OsireSidebar-button jp-mod-warn"
              aria-label={`Stop ${d.model}`}
              disabled={stopping}
              onClick={() => void model.stop(d.id)}
            >
              {stopping ? 'Stopping…' : 'Stop'}
            </button>
          )}
        </div>
      )}
      {d.replicas.length > 1 && (
        <ul className="jp-OsireSidebar-replicas">
          {d.replicas.map(r => (
            <li key={r.index}>
              <StateBadge state={r.state} small /> #{r.index} {replicaDetail(r)}
            </li>
          ))}
        </ul>
      )}
      {d.state !== 'stopped' && <LogTail deployment={d} model={model} />}
    </li>
  );
}

function StateBadge(props: { state: DeploymentState; small?: boolean }): JSX.Element {
  return (
    <span
      className={`jp-OsireSidebar-badge jp-mod-${props.state}${props.small ? ' jp-mod-small' : ''}`}
      role="status"
    >
      {(props.state === 'queued' || props.state === 'starting' || props.state === 'stopping') && (
        <span className="jp-OsireSidebar-spinner" aria-hidden="true" />
      )}
      {STATE_LABELS[props.state] ?? props.state}
    </span>
  );
}

/** The log tail: shown open for failed deployments (the reason is usually there). */
function LogTail(props: { deployment: IDeployment; model: OsireModel }): JSX.Element {
  const { deployment: d, model } = props;
  const failed = d.state === 'failed';
  const [open, setOpen] = React.useState(false);
  const [lines, setLines] = React.useState<string | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const stored = d.replicas
    .map(r => r.log_tail)
    .filter(Boolean)
    .join('\n');

  const load = React.useCallback(async () => {
    try {
      const logs = await model.api.logs(d.id, 50);
      const text = logs.replicas
        .map(r =>
          logs.replicas.length > 1
            ? `── replica ${r.index} (job ${r.job_id ?? '?'}) ──\n${r.lines.join('\n')}`
            : r.lines.join('\n')
        )
        .join('\n');
      setLines(text);
      setError(null);
    } catch (e) {
      setError((e as Error).message);
    }
  }, [d.id]);

  // Keep an open log fresh while the deployment is still changing.
  React.useEffect(() => {
    if (!open) {
      return;
    }
    void load();
    if (TERMINAL_STATES.has(d.state)) {
      return;
    }
    const timer = window.setInterval(() => void load(), 3000);
    return () => window.clearInterval(timer);
  }, [open, d.state, load]);

  const text = lines ?? (stored || null);
  const pre = React.useRef<HTMLPreElement>(null);
  // The cause of a failure is usually in the last lines: keep the view at the bottom.
  React.useEffect(() => {
    if (open && pre.current) {
      pre.current.scrollTop = pre.current.scrollHeight;
    }
  }, [open, text]);
  return (
    <details
      className="jp-OsireSidebar-log"
      open={open}
      onToggle={e => setOpen((e.currentTarget as HTMLDetailsElement).open)}
    >
      <summary>{failed ? 'Log tail' : 'Log'}</summary>
      {error && <div className="jp-OsireSidebar-error">{error}</div>}
      <pre ref={pre} className="jp-OsireSidebar-pre" tabIndex={0} aria-label={`Log of ${d.model}`}>
        {text ?? (open ? 'Loading…' : '')}
        {text === '' && '(empty)'}
      </pre>
    </details>
  );
}

/** One line saying what is going on: Slurm's reason, elapsed time, where it runs. */
export function describe(d: IDeployment): string {
  const r = d.replicas[0];
  switch (d.state) {
    case 'queued': {
      const parts = [d.reason || r?.reason ? `waiting: ${d.reason || r?.reason}` : 'waiting for the scheduler'];
      const est = d.replicas.map(x => x.estimated_start).find(x => x);
      if (est) {
        parts.push(`est. start ${formatWhen(est)}`);
      }
      return parts.join(' · ');
    }
    case 'starting': {
      const elapsed = d.replicas.map(x => x.elapsed).find(x => x != null);
      const where = r?.node ? ` on ${r.node}` : '';
      return `engine loading${where}${elapsed != null ? ` · ${formatDuration(elapsed)}` : ''}`;
    }
    case 'ready': {
      const ready = d.replicas.filter(x => x.state === 'ready');
      const nodes = Array.from(new Set(ready.map(x => x.node || x.host).filter(Boolean)));
      const count = d.replicas.length > 1 ? `${ready.length}/${d.replicas.length} replicas · ` : '';
      return `${count}${nodes.length ? `on ${nodes.join(', ')}` : 'serving'}`;
    }
    case 'stopping':
      return 'cancelling the job';
    case 'failed':
      return d.reason || r?.reason || 'failed';
    case 'stopped':
      return `${d.reason || 'stopped'} · launched ${formatWhen(d.created)}`;
    default:
      return d.reason ?? '';
  }
}

function replicaDetail(r: IReplica): string {
  const parts = [r.job_id ? `job ${r.job_id}` : 'not submitted'];
  if (r.node) {
    parts.push(r.node);
  }
  if (r.reason) {
    parts.push(r.reason);
  }
  return parts.join(' · ');
}

function summarize(res: Resources, engine: string): string {
  const parts: string[] = [];
  if (res.gpus) {
    parts.push(`${res.gpus} GPU${res.gpus === 1 ? '' : 's'}${res.gpu_type ? ` (${res.gpu_type})` : ''}`);
  } else {
    parts.push('no GPU');
  }
  if (res.cpus != null) {
    parts.push(`${res.cpus} CPU${res.cpus === 1 ? '' : 's'}`);
  }
  if (res.memory) {
    parts.push(String(res.memory));
  }
  if (res.time) {
    parts.push(String(res.time));
  }
  if (res.partition) {
    parts.push(String(res.partition));
  }
  parts.push(engine);
  return parts.join(' · ');
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  const m = Math.floor(s / 60);
  if (m < 60) {
    return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  }
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

function formatWhen(epochSeconds: number): string {
  const delta = epochSeconds - Date.now() / 1000;
  if (Math.abs(delta) < 60) {
    return delta >= 0 ? 'now' : 'just now';
  }
  if (delta > 0 && delta < 86400) {
    return `in ${formatDuration(delta)}`;
  }
  if (delta < 0 && delta > -86400) {
    return `${formatDuration(-delta)} ago`;
  }
  return new Date(epochSeconds * 1000).toLocaleString();
}

function domId(name: string): string {
  return `osire-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}
