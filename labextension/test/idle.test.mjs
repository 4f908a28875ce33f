// Idle replicas as cost (src/idle.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const i = await load('idle');

const NOW = 100000;
const replica = (index, state, ready_at, started_at = ready_at - 60) => ({
  index, job_id: String(index), state, reason: null, ready_at, started_at
});
const deployment = (over = {}) => ({
  id: 'd1', model: 'm', state: 'ready', reason: null, created: 0,
  resources: { gpus: 2, nodes: 1 },
  replicas: [replica(0, 'ready', NOW - 3600)],
  ...over
});

test('never used: GPUs x time since it became ready', () => {
  const c = i.idleCost(deployment(), NOW);
  assert.deepEqual(c, { idleSeconds: 3600, gpuHours: 2, gpus: 2, used: false });
  assert.equal(i.idleLine(c), 'Idle 1 h since it became ready, never used: 2 GPUs, 2 GPU-h spent');
});

test('since the last request, x nodes x ready replicas', () => {
  const d = deployment({
    resources: { gpus: 4, nodes: 2 },
    last_used: NOW - 1800,
    replicas: [replica(0, 'ready', NOW - 7200), replica(1, 'ready', NOW - 7200), replica(2, 'queued', null)]
  });
  const c = i.idleCost(d, NOW);
  assert.equal(c.gpus, 16);
  assert.equal(c.gpuHours, 8); // 4 GPUs x 2 nodes x 2 replicas x 0.5 h
  assert.equal(c.idleSeconds, 1800);
  assert.equal(i.idleLine(c), 'Idle 30 min since its last request: 16 GPUs, 8 GPU-h spent');
});

test('the policy view\'s last_used counts; a replica ready after it counts from its own start', () => {
  const d = deployment({
    policy: { last_used: NOW - 3600, in_flight: 0 },
    replicas: [replica(0, 'ready', NOW - 7200), replica(1, 'ready', NOW - 1800)]
  });
  const c = i.idleCost(d, NOW);
  assert.equal(c.gpuHours, 2 * 1 + 2 * 0.5);
  assert.equal(c.idleSeconds, 3600);
});

test('nothing while busy, not ready, just used, or without a ready time', () => {
  assert.equal(i.idleCost(deployment({ policy: { in_flight: 1 } }), NOW), null);
  assert.equal(i.idleCost(deployment({ state: 'starting' }), NOW), null);
  assert.equal(i.idleCost(deployment({ last_used: NOW - 10 }), NOW), null);
  assert.equal(
    i.idleCost(deployment({ replicas: [{ index: 0, job_id: '1', state: 'ready', reason: null }] }), NOW),
    null
  );
});

test('a model without GPUs says how long it is idle, no GPU hours', () => {
  const c = i.idleCost(deployment({ resources: { cpus: 1 } }), NOW);
  assert.equal(c.gpuHours, 0);
  assert.equal(i.idleLine(c), 'Idle 1 h since it became ready, never used');
});
