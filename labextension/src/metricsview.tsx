/**
 * A ready deployment's live figures as small sparklines: requests running and waiting, KV-cache
 * use, generated tokens per second, over the last minutes. A figure the engine does not export
 * is not drawn at all (no made-up zeros).
 */
import * as React from 'react';

import {
  IPoint,
  MetricsHistory,
  SeriesName,
  formatFigure,
  sparklinePath
} from './metrics';

const SERIES: { name: SeriesName; label: string; max?: number }[] = [
  { name: 'running', label: 'Running' },
  { name: 'waiting', label: 'Waiting' },
  { name: 'kvCache', label: 'KV cache', max: 1 },
  { name: 'tokensPerSecond', label: 'Tokens/s' }
];

const WIDTH = 96;
const HEIGHT = 20;

export function MetricsView(props: {
  history: MetricsHistory | undefined;
  model: string;
}): JSX.Element | null {
  const { history } = props;
  if (!history || !history.hasData) {
    return null;
  }
  const now = Date.now();
  // Until the window is full, the charts span the samples themselves (full width at once).
  const { t0, t1, full } = history.span(now);
  const minutes = Math.round(history.windowMs / 60000);
  const period = full ? `the last ${minutes} minutes` : `the last ${spanWords(now - t0)}`;
  return (
    <div
      className="jp-OsireMetrics"
      role="group"
      aria-label={`Live figures of ${props.model}, ${period}`}
      data-span={full ? 'window' : 'samples'}
    >
      {SERIES.filter(s => history.series[s.name].length > 0).map(s => (
        <Sparkline
          key={s.name}
          name={s.name}
          label={s.label}
          points={history.series[s.name]}
          t0={t0}
          t1={t1}
          max={s.max}
          period={period}
        />
      ))}
    </div>
  );
}

function Sparkline(props: {
  name: SeriesName;
  label: string;
  points: IPoint[];
  t0: number;
  t1: number;
  max?: number;
  period: string;
}): JSX.Element {
  const { points, name } = props;
  const last = points[points.length - 1].v;
  const peak = Math.max(...points.map(p => p.v));
  const d = sparklinePath(points, WIDTH, HEIGHT, props.t0, props.t1, props.max);
  const description = `${props.label}: now ${formatFigure(name, last)}, peak ${formatFigure(name, peak)} in ${props.period}`;
  return (
    <div
      className="jp-OsireMetrics-item"
      data-series={name}
      data-last={last}
      data-peak={peak}
      data-points={points.length}
      title={description}
    >
      <span className="jp-OsireMetrics-label">{props.label}</span>
      <svg
        className="jp-OsireMetrics-spark"
        width={WIDTH}
        height={HEIGHT}
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        role="img"
        aria-label={description}
        preserveAspectRatio="none"
      >
        <path className="jp-OsireMetrics-line" d={d} />
      </svg>
      <span className="jp-OsireMetrics-value">{formatFigure(name, last)}</span>
    </div>
  );
}

/** "40 s", "3 min". */
function spanWords(ms: number): string {
  const seconds = Math.max(1, Math.round(ms / 1000));
  return seconds < 90 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
}
