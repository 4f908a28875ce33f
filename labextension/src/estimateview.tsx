/**
 * The estimate under a launch card: asked (estimate.ts paces it) while the card's resources are
 * open, again after each edit; shown as one line, in the warning style when the server says the
 * user should think twice. An error that names a field is shown next to that field by the form.
 */
import * as React from 'react';

import { ApiError, IEstimate, ILaunchRequest, OsireApi } from './api';
import { LatestQuery, QueryResult, estimateUnavailable, estimateView, requestKey } from './estimate';

export interface IEstimateState {
  /** The newest answer (possibly to an older request while a new one is asked). */
  estimate: IEstimate | null;
  /** The newest error (an `ApiError`; its `param` may name a field). */
  error: ApiError | null;
  /** True when what is shown answers the form as it is now. */
  current: boolean;
}

/** Ask the estimate route for `request` (null: the form is not valid) while `active`. */
export function useEstimate(
  api: OsireApi,
  request: ILaunchRequest | null,
  active: boolean
): IEstimateState {
  const [result, setResult] = React.useState<QueryResult<IEstimate> | null>(null);
  const query = React.useRef<LatestQuery<ILaunchRequest, IEstimate> | null>(null);
  if (query.current === null) {
    query.current = new LatestQuery<ILaunchRequest, IEstimate>(
      body => api.estimate(body),
      answer => setResult(answer)
    );
  }
  const key = request && active ? requestKey(request) : null;
  React.useEffect(() => {
    query.current?.update(key, key === null ? null : request);
  }, [key]);
  React.useEffect(() => () => query.current?.dispose(), []);

  if (!active || result === null) {
    return { estimate: null, error: null, current: false };
  }
  const current = result.key === key;
  if (result.ok) {
    return { estimate: result.value, error: null, current };
  }
  const error =
    result.error instanceof ApiError ? result.error : new ApiError(String(result.error), 0);
  return { estimate: null, error, current };
}

/** The line under the card (nothing before the first answer, or for a field's error). */
export function EstimateLine(props: {
  state: IEstimateState;
  fieldError: boolean;
}): JSX.Element | null {
  const { estimate, error, current } = props.state;
  if (error) {
    if (props.fieldError || !current) {
      return null; // shown next to its field
    }
    const why = estimateUnavailable(error.status, error.message);
    return (
      <div
        className={`jp-OsireSidebar-estimate ${why.refused ? 'jp-mod-warn' : 'jp-mod-unavailable'}`}
        data-state={why.refused ? 'refused' : 'unavailable'}
        role="status"
      >
        {why.text}
      </div>
    );
  }
  if (!estimate) {
    return null;
  }
  const view = estimateView(estimate);
  return (
    <div
      className={`jp-OsireSidebar-estimate jp-mod-${view.tone}${current ? '' : ' jp-mod-stale'}`}
      data-state={current ? 'current' : 'pending'}
      data-tone={view.tone}
      role="status"
      aria-live="polite"
      title="Estimate: when Slurm expects it to start and what it would cost (nothing submitted)"
    >
      <div className="jp-OsireSidebar-estimateLine">{view.line}</div>
      {view.warning && <div className="jp-OsireSidebar-estimateWarning">⚠ {view.warning}</div>}
    </div>
  );
}
