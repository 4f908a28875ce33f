/**
 * The log viewer: a main-area tab following a deployment's job log, one replica at a time,
 * with search (matches highlighted, next/previous, "only matching lines").
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { IDeployment, ILogs, TERMINAL_STATES } from './api';
import { highlight, matchingLines, step } from './logsearch';
import { osireIcon } from './icon';
import { OsireModel } from './model';

export const LOG_LINES = 2000;
const FOLLOW_MS = 2000;

export class LogViewer extends ReactWidget {
  constructor(
    readonly model: OsireModel,
    readonly deploymentId: string
  ) {
    super();
    this.addClass('jp-OsireLog');
  }

  /** Put the keyboard in the search box, once it is rendered. */
  focusSearch(tries = 30): void {
    const input = this.node.querySelector<HTMLInputElement>('.jp-OsireLog-search');
    if (input) {
      input.focus();
    } else if (tries > 0) {
      window.requestAnimationFrame(() => this.focusSearch(tries - 1));
    }
  }

  protected onActivateRequest(msg: Message): void {
    super.onActivateRequest(msg);
    this.focusSearch();
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => (
          <LogView
            model={this.model}
            deployment={(this.model.deployments ?? []).find(d => d.id === this.deploymentId)}
            deploymentId={this.deploymentId}
          />
        )}
      </UseSignal>
    );
  }
}

export function createLogViewer(
  model: OsireModel,
  deployment: IDeployment
): MainAreaWidget<LogViewer> {
  const widget = new MainAreaWidget({ content: new LogViewer(model, deployment.id) });
  widget.id = `osire-log-${deployment.id}`;
  widget.title.label = `Log: ${deployment.model}`;
  widget.title.caption = `Job log of ${deployment.model} (deployment ${deployment.id})`;
  widget.title.closable = true;
  widget.title.icon = osireIcon;
  return widget;
}

function LogView(props: {
  model: OsireModel;
  deployment: IDeployment | undefined;
  deploymentId: string;
}): JSX.Element {
  const { model, deployment: d, deploymentId } = props;
  const [logs, setLogs] = React.useState<ILogs | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [replica, setReplica] = React.useState(0);
  const [follow, setFollow] = React.useState(true);
  const [query, setQuery] = React.useState('');
  const [only, setOnly] = React.useState(false);
  const [current, setCurrent] = React.useState(-1);
  const pre = React.useRef<HTMLDivElement>(null);
  const live = d ? !TERMINAL_STATES.has(d.state) : false;
  const id = `osire-log-${deploymentId}`;

  const load = React.useCallback(async () => {
    try {
      setLogs(await model.api.logs(deploymentId, LOG_LINES));
      setError(null);
    } catch (e) {
      setError((e as Error).message);
    }
  }, [deploymentId]);

  React.useEffect(() => {
    void load();
    if (!follow || !live) {
      return;
    }
    const timer = window.setInterval(() => void load(), FOLLOW_MS);
    return () => window.clearInterval(timer);
  }, [follow, live, load]);

  const replicas = logs?.replicas ?? [];
  const shown = replicas.find(r => r.index === replica) ?? replicas[0];
  const lines = shown?.lines ?? [];
  const matches = React.useMemo(() => matchingLines(lines, query), [lines, query]);
  const visible = only && query ? matches : lines.map((_, i) => i);

  // Follow: keep the bottom in view while new lines come (unless a match is being looked at).
  React.useEffect(() => {
    if (follow && pre.current && current < 0) {
      pre.current.scrollTop = pre.current.scrollHeight;
    }
  }, [lines.length, follow, current]);
  React.useEffect(() => {
    if (current >= 0) {
      pre.current
        ?.querySelector(`[data-line="${matches[current]}"]`)
        ?.scrollIntoView({ block: 'center' });
    }
  }, [current, query]);

  const go = (backwards: boolean): void => setCurrent(c => step(matches.length, c, backwards));

  return (
    <div className="jp-OsireLog-body">
      <div className="jp-OsireLog-toolbar" role="toolbar" aria-label="Log tools">
        {replicas.length > 1 && (
          <>
            <label htmlFor={`${id}-replica`}>Replica</label>
            <select
              id={`${id}-replica`}
              className="jp-OsireSidebar-input jp-OsireLog-replica"
              value={shown?.index ?? 0}
              onChange={e => setReplica(Number(e.currentTarget.value))}
            >
              {replicas.map(r => (
                <option key={r.index} value={r.index}>
                  #{r.index} (job {r.job_id ?? '?'})
                </option>
              ))}
            </select>
          </>
        )}
        <input
          className="jp-OsireSidebar-input jp-OsireLog-search"
          type="search"
          aria-label="Search the log"
          placeholder="Search the log (Enter: next, Shift+Enter: previous)"
          value={query}
          onChange={e => {
            setQuery(e.currentTarget.value);
            setCurrent(-1);
          }}
          onKeyDown={e => {
            if (e.key === 'Enter') {
              e.preventDefault();
              go(e.shiftKey);
            }
          }}
        />
        <span className="jp-OsireLog-count" aria-live="polite">
          {query
            ? `${current >= 0 ? `${current + 1}/` : ''}${matches.length} match${matches.length === 1 ? '' : 'es'}`
            : ''}
        </span>
        <button
          type="button"
          className="jp-OsireSidebar-button"
          aria-label="Previous match"
          disabled={!matches.length}
          onClick={() => go(true)}
        >
          ↑
        </button>
        <button
          type="button"
          className="jp-OsireSidebar-button"
          aria-label="Next match"
          disabled={!matches.length}
          onClick={() => go(false)}
        >
          ↓
        </button>
        <label className="jp-OsireLog-check">
          <input type="checkbox" checked={only} onChange={e => setOnly(e.currentTarget.checked)} />
          Only matching lines
        </label>
        <label className="jp-OsireLog-check">
          <input
            type="checkbox"
            checked={follow}
            onChange={e => setFollow(e.currentTarget.checked)}
          />
          Follow
        </label>
        <button
          type="button"
          className="jp-OsireSidebar-button"
          aria-label="Reload the log"
          onClick={() => void load()}
        >
          Reload
        </button>
        <span className="jp-OsireLog-state">
          {d ? `${d.model} · ${d.state}` : 'deployment not found'}
          {shown?.job_id ? ` · job ${shown.job_id}` : ''} · last {LOG_LINES} lines
        </span>
      </div>
      {error && (
        <div className="jp-OsireSidebar-error" role="alert">
          {error}
        </div>
      )}
      <div
        ref={pre}
        className="jp-OsireLog-lines"
        role="log"
        tabIndex={0}
        aria-label={`Log of ${d?.model ?? deploymentId}${shown ? `, replica ${shown.index}` : ''}`}
        data-lines={lines.length}
      >
        {logs === null && !error && <div className="jp-OsireLog-line">Loading…</div>}
        {logs !== null && lines.length === 0 && (
          <div className="jp-OsireLog-line jp-mod-empty">(the log is empty so far)</div>
        )}
        {visible.map(i => (
          <div
            key={i}
            data-line={i}
            className={`jp-OsireLog-line${current >= 0 && matches[current] === i ? ' jp-mod-current' : ''}`}
          >
            {highlight(lines[i], query).map((seg, j) =>
              seg.match ? <mark key={j}>{seg.text}</mark> : <React.Fragment key={j}>{seg.text}</React.Fragment>
            )}
          </div>
        ))}
      </div>
    </div>
  );
}
