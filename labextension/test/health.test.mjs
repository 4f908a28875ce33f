// The sidebar's banner about the state file (src/health.ts): damaged and replaced, or rows skipped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const h = await load('health');
const health = problems => ({ status: problems.length ? 'degraded' : 'ok', version: '1',
  scheduler: { name: 'slurm' }, state: { path: '/s.sqlite', problems } });

test('nothing to say about a sound state file, or before health is known', () => {
  assert.equal(h.stateWarning(null), null);
  assert.equal(h.stateWarning(health([])), null);
  assert.equal(h.stateWarning({ status: 'ok', version: '1', scheduler: { name: 'x' } }), null);
});

test('a damaged file that was moved aside is said at the top, with the server\'s words', () => {
  const said = 'the state file /s.sqlite is damaged (database disk image is malformed); it was ' +
    'moved aside to /s.sqlite.corrupt-20260101T000000Z (kept for the administrator)';
  const warning = h.stateWarning(health([said]));
  assert.match(warning.title, /state file was damaged/);
  assert.match(warning.title, /may be missing/);
  assert.deepEqual(warning.problems, [said]);
});

test('unreadable records are counted', () => {
  const warning = h.stateWarning(health(['deployment a: unreadable record skipped (x)',
                                          'deployment b: unreadable record skipped (y)']));
  assert.equal(warning.title, '2 records in the state file could not be read and are not shown.');
});
