// Log search (src/logsearch.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const l = await load('logsearch');
const LINES = ['INFO starting', 'ERROR out of memory', 'info: Error again', 'done'];

test('matching lines, smart case', () => {
  assert.deepEqual(l.matchingLines(LINES, 'error'), [1, 2]);
  assert.deepEqual(l.matchingLines(LINES, 'ERROR'), [1]);
  assert.deepEqual(l.matchingLines(LINES, ''), []);
});

test('highlight segments keep the text and mark every occurrence', () => {
  const segs = l.highlight('abcABCabc', 'abc');
  assert.deepEqual(segs.map(s => [s.text, s.match]), [['abc', true], ['ABC', true], ['abc', true]]);
  assert.deepEqual(l.highlight('x error y', 'error').map(s => s.text).join(''), 'x error y');
  assert.deepEqual(l.highlight('', 'a'), [{ text: '', match: false }]);
  assert.deepEqual(l.highlight('abc', ''), [{ text: 'abc', match: false }]);
});

test('next and previous match wrap around', () => {
  assert.equal(l.step(3, -1), 0);
  assert.equal(l.step(3, -1, true), 2);
  assert.equal(l.step(3, 2), 0);
  assert.equal(l.step(3, 0, true), 2);
  assert.equal(l.step(0, 0), -1);
});
