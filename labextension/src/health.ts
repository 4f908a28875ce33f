/** What the sidebar says about the server's own health beyond the scheduler: a damaged state
 * file that was moved aside and replaced, or records in it that could not be read. Pure, for
 * node's test runner. */
import type { IHealth } from './types';

export interface IStateWarning {
  title: string;
  problems: string[];
}

/** The banner for the state file's problems (``health.state.problems``), or null. */
export function stateWarning(health: IHealth | null): IStateWarning | null {
  const problems = health?.state?.problems ?? [];
  if (problems.length === 0) {
    return null;
  }
  const replaced = problems.some(p => p.includes('moved aside'));
  const title = replaced
    ? 'The state file was damaged: it was set aside and a new one started. ' +
      'Some deployments, batches or files may be missing from these lists.'
    : `${problems.length} record${problems.length === 1 ? '' : 's'} in the state file ` +
      'could not be read and are not shown.';
  return { title, problems };
}
