// The launch form's checks (src/validate.ts), the same rules as the server's spec.py.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const v = await load('validate');
const DEFAULTS = { gpus: 1, cpus: 8, memory: '64G', time: '04:00:00', partition: 'gpu' };

test('Slurm time syntax in minutes', () => {
  assert.equal(v.slurmMinutes('90'), 90);
  assert.equal(v.slurmMinutes('10:30'), 11);
  assert.equal(v.slurmMinutes('01:00:00'), 60);
  assert.equal(v.slurmMinutes('1-0'), 1440);
  assert.equal(v.slurmMinutes('1-02:03'), 1563);
  assert.equal(v.slurmMinutes('2-00:00:01'), 2881);
  for (const bad of ['', 'abc', '1:2:3:4', '1h', '-5', '1-']) {
    assert.equal(v.slurmMinutes(bad), null, bad);
  }
});

test('initial values come from the catalog; replicas 1', () => {
  assert.deepEqual(v.initialValues(DEFAULTS), {
    gpus: '1', memory: '64G', time: '04:00:00', partition: 'gpu', account: '', replicas: '1'
  });
});

test('each field is checked; empty means the default', () => {
  const ok = v.initialValues(DEFAULTS);
  assert.deepEqual(v.validateForm(ok), {});
  assert.deepEqual(v.validateForm({ ...ok, gpus: '', time: '', partition: '' }), {});
  const errors = v.validateForm({
    gpus: '1.5', memory: '64 GB', time: '4 hours', partition: 'gpu;rm', account: '-x', replicas: '0'
  });
  assert.deepEqual(Object.keys(errors).sort(),
    ['account', 'gpus', 'memory', 'partition', 'replicas', 'time']);
  assert.match(errors.gpus, /whole number/);
  assert.match(errors.replicas, /between 1 and 64/);
  assert.match(v.validateForm({ ...ok, time: '0' }).time, /at least one minute/);
  assert.deepEqual(v.validateForm({ ...ok, memory: '4000m' }), {});
});

test('the request carries only what the user changed', () => {
  const values = { ...v.initialValues(DEFAULTS) };
  assert.deepEqual(v.buildLaunchRequest('m', values, DEFAULTS), { request: { model: 'm' }, errors: {} });
  values.gpus = '2';
  values.time = '1:00:00';
  values.memory = '32g';
  values.account = 'proj1';
  values.replicas = '2';
  assert.deepEqual(v.buildLaunchRequest('m', values, DEFAULTS).request, {
    model: 'm', replicas: 2,
    resources: { gpus: 2, memory: '32G', time: '1:00:00', account: 'proj1' }
  });
});

test('invalid values send nothing', () => {
  const values = { ...v.initialValues(DEFAULTS), gpus: 'two' };
  const { request, errors } = v.buildLaunchRequest('m', values, DEFAULTS);
  assert.equal(request, null);
  assert.ok(errors.gpus);
});

test("server errors land on the field their 'param' names", () => {
  assert.equal(v.fieldOfParam('resources.gpus'), 'gpus');
  assert.equal(v.fieldOfParam('replicas'), 'replicas');
  assert.equal(v.fieldOfParam('model'), null);
  assert.equal(v.fieldOfParam(null), null);
});
