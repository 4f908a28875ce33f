// State wording (src/states.ts): Slurm's reasons explained, elapsed times, failures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const s = await load('states');
const NOW = 1_700_000_000;

const deployment = (state, replica = {}, extra = {}) => ({
  id: 'd1', model: 'smollm2', state, reason: replica.reason ?? null, created: NOW - 90,
  resources: {}, replicas: [{ index: 0, job_id: '42', state, reason: null, ...replica }], ...extra
});

test('Slurm reasons in plain words', () => {
  assert.match(s.explainReason('Resources'), /^Resources: waiting for GPUs, CPUs or memory/);
  assert.match(s.explainReason('Priority'), /higher priority/);
  assert.match(s.explainReason('QOSMaxGPUPerUserLimit'), /as many GPUs as your QOS allows/);
  assert.match(s.explainReason('QOSMaxFooPerUserLimit'), /per-user limit of your QOS/);
  assert.match(s.explainReason('AssocGrpSomething'), /limit of your account/);
  assert.equal(s.explainReason('SomethingNew'), 'SomethingNew');
  assert.equal(s.explainReason(null), null);
});

test('queued: the reason explained and the estimated start', () => {
  const w = s.describeDeployment(
    deployment('queued', { reason: 'Resources', estimated_start: NOW + 300 }), NOW);
  assert.equal(w.summary, 'waiting in the queue (Resources) · 1m 30s');
  assert.deepEqual(w.details, [
    'Slurm: Resources: waiting for GPUs, CPUs or memory to become free',
    "Slurm's estimated start: in 5m 00s"
  ]);
  const plain = s.describeDeployment(deployment('queued'), NOW);
  assert.equal(plain.summary, 'waiting in the queue · 1m 30s');
  assert.deepEqual(plain.details, []);
});

test('starting: node and elapsed time', () => {
  const w = s.describeDeployment(deployment('starting', { node: 'gpu07', elapsed: 75 }), NOW);
  assert.equal(w.summary, 'engine loading the model on gpu07 · 1m 15s');
});

test('ready: where and for how long; replicas counted', () => {
  const one = s.describeDeployment(deployment('ready', { node: 'gpu07', ready_at: NOW - 3700 }), NOW);
  assert.equal(one.summary, 'serving on gpu07 · up 1h 01m');
  const two = deployment('ready', { node: 'a' });
  two.replicas.push({ index: 1, job_id: '43', state: 'starting', reason: null, node: 'b' });
  assert.equal(s.describeDeployment(two, NOW).summary, '1/2 replicas · serving on a');
});

test('failed: the reason and the exit code', () => {
  const w = s.describeDeployment(
    deployment('failed', { reason: 'job failed at start-up (exit code 3)', exit_code: 3 }), NOW);
  assert.equal(w.summary, 'job failed at start-up (exit code 3)');
  assert.deepEqual(w.details, ['exit code 3']);
});

test('durations and times', () => {
  assert.equal(s.formatDuration(5), '5s');
  assert.equal(s.formatDuration(125), '2m 05s');
  assert.equal(s.formatDuration(7260), '2h 01m');
  assert.equal(s.formatDuration(3 * 86400 + 3600), '3d 1h');
  assert.equal(s.formatWhen(NOW + 30, NOW), 'now');
  assert.equal(s.formatWhen(NOW - 30, NOW), 'just now');
  assert.equal(s.formatWhen(NOW - 120, NOW), '2m 00s ago');
  assert.equal(s.formatWhen(NOW + 2 * 86400, NOW), '2023-11-16 22:13');
});

test('replica line', () => {
  assert.equal(s.describeReplica({ index: 0, job_id: '7', node: 'n1', reason: 'Priority', state: 'queued' }),
    'job 7 · n1 · Priority');
  assert.equal(s.describeReplica({ index: 1, job_id: null, reason: null, state: 'queued' }), 'not submitted');
});

test('policies in words: idle countdown, pinned, busy, renewal, restarts, note', () => {
  const ready = extra => s.describeDeployment(deployment('ready', { node: 'n' }, extra), NOW).details;
  assert.deepEqual(ready({ policy: { idle_timeout: 1800, idle_stop_in: 750, in_flight: 0 } }),
    ['stops when idle: in 12m 30s without a request']);
  assert.deepEqual(ready({ policy: { idle_timeout: 1800, idle_stop_in: 750, in_flight: 2 } }),
    ['busy (2 requests): idle shutdown waits']);
  assert.deepEqual(ready({ policy: { idle_timeout: 1800, pinned: true } }),
    ['pinned: never stopped for being idle']);
  assert.deepEqual(ready({ policy: { idle_timeout: 0, idle_stop_in: null, renewal: 'replacement queued (Priority)' },
    restarts: 1, note: 'max_total_gpus reached: no renewal' }),
  ['renewal: replacement queued (Priority)', 'restarted 1 time after a failure',
    'max_total_gpus reached: no renewal']);
  assert.deepEqual(ready({}), []);
});
