/**
 * The sidebar's "Usage" section: per model over the last 30 days, requests, prompt and
 * completion tokens, GPU hours and billing (`GET /osire/api/usage`), and a bar chart of GPU
 * hours or tokens per day. Asked when the sidebar refreshes, at most once a minute
 * (usagecalc.ts); a server without the route says so.
 */
import * as React from 'react';

import { ApiError, IDeployment, IUsage } from './api';
import { idleCost, idleLine } from './idle';
import { OsireModel } from './model';
import {
  IModelUsage,
  USAGE_DAYS,
  UsageMetric,
  barGeometry,
  dailySeries,
  formatCount,
  formatHours,
  isoDay,
  sinceDay,
  sumByModel,
  total,
  usageDue
} from './usagecalc';

/** A ready deployment's idle GPUs as cost, on its card (nothing while it is busy or new). */
export function IdleCost(props: { deployment: IDeployment }): JSX.Element | null {
  const idle = idleCost(props.deployment, Date.now() / 1000);
  if (!idle) {
    return null;
  }
  return (
    <div
      className={`jp-OsireSidebar-idle${idle.gpus ? ' jp-mod-cost' : ''}`}
      data-gpu-hours={idle.gpuHours.toFixed(4)}
      title="GPU hours the ready replicas have held without answering a request (GPUs per replica x nodes x ready replicas x idle time)"
    >
      {idleLine(idle)}
    </div>
  );
}

const CHART_WIDTH = 240;
const CHART_HEIGHT = 44;

/** The usage, asked when the model refreshes and at most every `USAGE_EVERY_MS`. */
function useUsage(model: OsireModel): {
  usage: IUsage | null;
  error: ApiError | null;
  askedDay: string;
} {
  const [usage, setUsage] = React.useState<IUsage | null>(null);
  const [error, setError] = React.useState<ApiError | null>(null);
  const asked = React.useRef({ at: 0, busy: false, day: isoDay(Date.now()) });
  React.useEffect(() => {
    let live = true;
    const ask = (): void => {
      const now = Date.now();
      if (asked.current.busy || !usageDue(now, asked.current.at)) {
        return;
      }
      asked.current = { at: now, busy: true, day: isoDay(now) };
      model.api
        .usage(sinceDay(now))
        .then(
          body => {
            if (live) {
              setUsage(body);
              setError(null);
            }
          },
          e => {
            if (live) {
              setError(e instanceof ApiError ? e : new ApiError(String(e), 0));
            }
          }
        )
        .finally(() => {
          asked.current.busy = false;
        });
    };
    ask();
    model.changed.connect(ask);
    return () => {
      live = false;
      model.changed.disconnect(ask);
    };
  }, [model]);
  return { usage, error, askedDay: asked.current.day };
}

export function UsageSection(props: { model: OsireModel }): JSX.Element {
  const { usage, error, askedDay } = useUsage(props.model);
  const [open, setOpen] = React.useState(true);
  const [chosen, setMetric] = React.useState<UsageMetric | null>(null);
  const models = usage ? sumByModel(usage.usage ?? []) : [];
  // GPU hours unless there are none yet (jobs count when they end): then the tokens.
  const metric: UsageMetric = chosen ?? (total(models).gpu_hours > 0 ? 'gpu_hours' : 'tokens');
  let body: JSX.Element;
  if (error && !usage) {
    body = (
      <p className="jp-OsireSidebar-empty" data-usage="unavailable">
        {error.status === 404 ? 'Usage not available on this server.' : `Usage not available: ${error.message}`}
      </p>
    );
  } else if (!usage) {
    body = <p className="jp-OsireSidebar-empty">Loading…</p>;
  } else if (models.length === 0) {
    body = (
      <p className="jp-OsireSidebar-empty" data-usage="empty">
        No use in the last {USAGE_DAYS} days.
      </p>
    );
  } else {
    body = (
      <>
        <UsageChart
          usage={usage}
          until={askedDay}
          metric={metric}
          onMetric={setMetric}
        />
        <UsageTable models={models} />
      </>
    );
  }
  return (
    <section className="jp-OsireSidebar-section jp-OsireUsage" aria-label="Usage">
      <details open={open} onToggle={e => setOpen((e.currentTarget as HTMLDetailsElement).open)}>
        <summary className="jp-OsireSidebar-sectionTitle">Usage (last {USAGE_DAYS} days)</summary>
        {body}
      </details>
    </section>
  );
}

function UsageChart(props: {
  usage: IUsage;
  until: string;
  metric: UsageMetric;
  onMetric: (metric: UsageMetric) => void;
}): JSX.Element {
  const since = props.usage.since || sinceDay(Date.now());
  const until = props.until > since ? props.until : since;
  const series = dailySeries(props.usage.usage ?? [], since, until, props.metric);
  const bars = barGeometry(series, CHART_WIDTH, CHART_HEIGHT);
  const what = props.metric === 'tokens' ? 'tokens' : 'GPU hours';
  const fmt = (v: number): string => (props.metric === 'tokens' ? formatCount(v) : formatHours(v));
  const peak = Math.max(0, ...series.map(d => d.value));
  return (
    <div className="jp-OsireUsage-chart">
      <div className="jp-OsireUsage-chartHead">
        <span>
          {what} per day, peak {fmt(peak)}
        </span>
        <select
          className="jp-OsireUsage-metric"
          aria-label="Chart shows"
          value={props.metric}
          onChange={e => props.onMetric(e.currentTarget.value as UsageMetric)}
        >
          <option value="gpu_hours">GPU hours</option>
          <option value="tokens">Tokens</option>
        </select>
      </div>
      <svg
        className="jp-OsireUsage-svg"
        width="100%"
        height={CHART_HEIGHT}
        viewBox={`0 0 ${CHART_WIDTH} ${CHART_HEIGHT}`}
        preserveAspectRatio="none"
        role="img"
        aria-label={`${what} per day from ${since} to ${until}, peak ${fmt(peak)}`}
        data-metric={props.metric}
      >
        {bars.map(b => (
          <rect
            key={b.day}
            className={`jp-OsireUsage-bar${b.value > 0 ? '' : ' jp-mod-empty'}`}
            x={b.x}
            y={b.height > 0 ? b.y : CHART_HEIGHT - 0.5}
            width={b.width}
            height={b.height > 0 ? b.height : 0.5}
            data-day={b.day}
            data-value={b.value}
          >
            <title>{`${b.day}: ${fmt(b.value)} ${what}`}</title>
          </rect>
        ))}
      </svg>
      <div className="jp-OsireUsage-axis" aria-hidden="true">
        <span>{since.slice(5)}</span>
        <span>{until.slice(5)}</span>
      </div>
    </div>
  );
}

function UsageTable(props: { models: IModelUsage[] }): JSX.Element {
  const rows = props.models.length > 1 ? [...props.models, total(props.models)] : props.models;
  const billing = props.models.some(m => m.billing !== null);
  return (
    <table className="jp-OsireUsage-table">
      <thead>
        <tr>
          <th scope="col">Model</th>
          <th scope="col" title="Requests answered">Req.</th>
          <th scope="col" title="Prompt tokens / completion tokens">Tokens in/out</th>
          <th scope="col" title="GPU hours held by its jobs">GPU-h</th>
          {billing && (
            <th scope="col" title="Billing unit-hours (the site's TRESBillingWeights)">SU</th>
          )}
        </tr>
      </thead>
      <tbody>
        {rows.map((m, i) => (
          <tr
            key={m.model}
            data-model={i < props.models.length ? m.model : undefined}
            className={i >= props.models.length ? 'jp-mod-total' : undefined}
          >
            <th scope="row" title={m.model}>
              {m.model}
            </th>
            <td>{formatCount(m.requests)}</td>
            <td>
              {formatCount(m.prompt_tokens)} / {formatCount(m.completion_tokens)}
            </td>
            <td>{formatHours(m.gpu_hours)}</td>
            {billing && <td>{m.billing === null ? '–' : formatHours(m.billing)}</td>}
          </tr>
        ))}
      </tbody>
    </table>
  );
}
