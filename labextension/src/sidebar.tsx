/**
 * The "LLMs" sidebar: the user's deployments (state in words, live figures, actions), their
 * batches and their progress (batchlist.tsx), the site catalog with a launch form per model,
 * and the scheduler backend in the footer. Actions run the extension's commands, so the
 * palette, shortcuts and the sidebar do the same thing.
 */
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { DeploymentState, IDeployment, TERMINAL_STATES } from './api';
import { BatchSection } from './batchlist';
import { CommandIDs } from './commandids';
import { IStateWarning, stateWarning } from './health';
import { LaunchForm } from './launchform';
import { MetricsView } from './metricsview';
import { OsireModel } from './model';
import { STATE_LABELS, describeDeployment, describeReplica } from './states';
import { IdleCost, UsageSection } from './usage';

export class OsireSidebar extends ReactWidget {
  constructor(
    readonly model: OsireModel,
    readonly commands: CommandRegistry
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
        {() => <SidebarView model={this.model} commands={this.commands} />}
      </UseSignal>
    );
  }
}

/** A damaged state file (moved aside, rows lost) or unreadable records: said at the top,
 * with the server's own words (as text) under Details. */
function StateBanner(props: { warning: IStateWarning | null }): JSX.Element | null {
  const { warning } = props;
  if (warning === null) {
    return null;
  }
  return (
    <div className="jp-OsireSidebar-banner" role="alert">
      <strong>⚠ {warning.title}</strong>
      <details>
        <summary>Details</summary>
        <ul>
          {warning.problems.map((p, i) => (
            <li key={i}>{p}</li>
          ))}
        </ul>
      </details>
    </div>
  );
}

function SidebarView(props: { model: OsireModel; commands: CommandRegistry }): JSX.Element {
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

      <StateBanner warning={stateWarning(model.health)} />

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
            <DeploymentItem key={d.id} deployment={d} model={model} commands={props.commands} />
          ))}
        </ul>
      </section>

      <BatchSection model={model} />

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
            <LaunchForm key={m.name} entry={m} model={model} />
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
        <FinishedSection deployments={ended} model={model} commands={props.commands} />
      )}

      <UsageSection model={model} />

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
  commands: CommandRegistry;
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
            <DeploymentItem key={d.id} deployment={d} model={props.model} commands={props.commands} />
          ))}
        </ul>
      </details>
    </section>
  );
}

function DeploymentItem(props: {
  deployment: IDeployment;
  model: OsireModel;
  commands: CommandRegistry;
}): JSX.Element {
  const { deployment: d, model, commands } = props;
  const stopping = model.stopping.has(d.id) || d.state === 'stopping';
  const terminal = TERMINAL_STATES.has(d.state);
  const words = describeDeployment(d, Date.now() / 1000);
  const run = (id: string): void => void commands.execute(id, { id: d.id });

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
        <span className="jp-OsireSidebar-detail">{words.summary}</span>
      </div>
      {words.details.length > 0 && (
        <ul className="jp-OsireSidebar-explain">
          {words.details.map((line, i) => (
            <li key={i}>{line}</li>
          ))}
        </ul>
      )}
      <IdleCost deployment={d} />
      {d.state === 'ready' && (
        <UseSignal signal={model.metricsChanged}>
          {() => <MetricsView history={model.metrics.get(d.id)} model={d.model} />}
        </UseSignal>
      )}
      <div className="jp-OsireSidebar-actions">
        {d.state === 'ready' && (
          <>
            <button
              type="button"
              className="jp-OsireSidebar-button jp-mod-accept"
              aria-label={`Open playground for ${d.model}`}
              title="Chat with this model in a playground tab"
              onClick={() => run(CommandIDs.openPlayground)}
            >
              Playground
            </button>
            <button
              type="button"
              className="jp-OsireSidebar-button"
              aria-label={`Insert code calling ${d.model} into the notebook`}
              title="Add a cell calling this model with jupyter_osire_llm.client() below the active cell of the current notebook"
              onClick={() => run(CommandIDs.insertSnippet)}
            >
              Insert
            </button>
            <button
              type="button"
              className="jp-OsireSidebar-button"
              aria-label={`Copy OpenAI snippet for ${d.model}`}
              title="Copy Python code that calls this model with the OpenAI client"
              onClick={() => run(CommandIDs.copySnippet)}
            >
              Copy code
            </button>
          </>
        )}
        {d.replicas.some(r => r.job_id) && (
          <button
            type="button"
            className="jp-OsireSidebar-button"
            aria-label={`Open log of ${d.model}`}
            title="Follow the job's log in a tab, with search"
            onClick={() => run(CommandIDs.openLogs)}
          >
            Log
          </button>
        )}
        {!terminal && (
          <button
            type="button"
            className="jp-OsireSidebar-button jp-mod-warn"
            aria-label={`Stop ${d.model}`}
            disabled={stopping}
            onClick={() => run(CommandIDs.stop)}
          >
            {stopping ? 'Stopping…' : 'Stop'}
          </button>
        )}
      </div>
      {d.replicas.length > 1 && (
        <ul className="jp-OsireSidebar-replicas" aria-label="Replicas">
          {d.replicas.map(r => (
            <li key={r.index}>
              <StateBadge state={r.state} small /> #{r.index} {describeReplica(r)}
            </li>
          ))}
        </ul>
      )}
      {d.state === 'failed' && <LogTail deployment={d} model={model} />}
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

/** A failed deployment's log tail (the reason is usually there); the full log is a click away. */
function LogTail(props: { deployment: IDeployment; model: OsireModel }): JSX.Element {
  const { deployment: d, model } = props;
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
      <summary>Log tail</summary>
      {error && <div className="jp-OsireSidebar-error">{error}</div>}
      <pre ref={pre} className="jp-OsireSidebar-pre" tabIndex={0} aria-label={`Log of ${d.model}`}>
        {text ?? (open ? 'Loading…' : '')}
        {text === '' && '(empty)'}
      </pre>
    </details>
  );
}
