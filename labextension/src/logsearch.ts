/**
 * Search in a job log: which lines match, and each line cut into plain and matching pieces for
 * highlighting. Case-insensitive unless the query has a capital letter (as editors do).
 *
 * Pure (no runtime imports): test/logsearch.test.mjs.
 */

export interface ISegment {
  text: string;
  match: boolean;
}

function fold(query: string): (s: string) => string {
  return /[A-Z]/.test(query) ? s => s : s => s.toLowerCase();
}

/** Indexes of the lines holding `query` (all lines' indexes... none when the query is empty). */
export function matchingLines(lines: string[], query: string): number[] {
  if (!query) {
    return [];
  }
  const f = fold(query);
  const q = f(query);
  const out: number[] = [];
  lines.forEach((line, i) => {
    if (f(line).includes(q)) {
      out.push(i);
    }
  });
  return out;
}

/** `line` cut into pieces, the occurrences of `query` marked. */
export function highlight(line: string, query: string): ISegment[] {
  if (!query) {
    return [{ text: line, match: false }];
  }
  const f = fold(query);
  const hay = f(line);
  const q = f(query);
  const segments: ISegment[] = [];
  let at = 0;
  for (;;) {
    const found = hay.indexOf(q, at);
    if (found < 0) {
      break;
    }
    if (found > at) {
      segments.push({ text: line.slice(at, found), match: false });
    }
    segments.push({ text: line.slice(found, found + q.length), match: true });
    at = found + q.length;
  }
  if (at < line.length || segments.length === 0) {
    segments.push({ text: line.slice(at), match: false });
  }
  return segments;
}

/** The next match index after `current` (wrapping), or previous when `backwards`. */
export function step(count: number, current: number, backwards = false): number {
  if (count <= 0) {
    return -1;
  }
  if (current < 0) {
    return backwards ? count - 1 : 0;
  }
  return (current + (backwards ? count - 1 : 1)) % count;
}
