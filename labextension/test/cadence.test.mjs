// The poll loop's pace (src/cadence.ts): fast while something changes by itself, the user's
// interval while all is stable, slow while hidden; health at most every 30 s; metrics scrapes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const c = await load('cadence');
const poll = (visible, busy, refreshInterval = 10) => c.pollDelay({ visible, busy, refreshInterval });

test('every 2 s while the panel is visible and something is about to change', () => {
  assert.equal(c.FAST_POLL_MS, 2000);
  assert.equal(poll(true, true), 2000);
  assert.equal(poll(true, true, 600), 2000);
});

test("the user's interval while everything is stable, never under a second", () => {
  assert.equal(poll(true, false), 10_000);
  assert.equal(poll(true, false, 45), 45_000);
  assert.equal(poll(true, false, 0.2), 1000);
  assert.equal(poll(true, false, -5), 1000);
});

test('once a minute while the panel or the browser tab is hidden, busy or not', () => {
  assert.equal(c.HIDDEN_POLL_MS, 60_000);
  assert.equal(poll(false, true), 60_000);
  assert.equal(poll(false, false, 2), 60_000);
});

test('health is asked again only after 30 s', () => {
  assert.equal(c.HEALTH_EVERY_MS, 30_000);
  assert.equal(c.healthDue(100_000, 0), true); // never asked: at the first poll
  assert.equal(c.healthDue(130_000, 100_000), false);
  assert.equal(c.healthDue(130_001, 100_000), true);
});

test("metrics scrapes every metricsInterval seconds, at most twice a second", () => {
  assert.equal(c.metricsDelay(3), 3000);
  assert.equal(c.metricsDelay(60), 60_000);
  assert.equal(c.metricsDelay(0.1), 500);
  assert.equal(c.metricsDelay(0), 500);
});
