// The launch form's estimate: pacing of the questions and the line shown (src/estimate.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const e = await load('estimate');

/** Timers run by hand: `advance(ms)` fires what is due. */
function fakeTimers() {
  let now = 0;
  let next = 1;
  const due = new Map();
  return {
    set(fn, ms) {
      const id = next++;
      due.set(id, { at: now + ms, fn });
      return id;
    },
    clear(id) {
      due.delete(id);
    },
    async advance(ms) {
      now += ms;
      for (const [id, t] of [...due].sort((a, b) => a[1].at - b[1].at)) {
        if (t.at <= now && due.has(id)) {
          due.delete(id);
          t.fn();
        }
      }
      await flush();
    },
    get pending() {
      return due.size;
    }
  };
}

const flush = () => new Promise(resolve => setImmediate(resolve));

/** A server whose answers the test releases one by one. */
function server() {
  const asked = [];
  return {
    asked,
    ask(query) {
      let resolve, reject;
      const promise = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
      asked.push({ query, resolve, reject });
      return promise;
    }
  };
}

test('asks once, after the edits stop for the delay', async () => {
  const timers = fakeTimers();
  const s = server();
  const got = [];
  const q = new e.LatestQuery(x => s.ask(x), r => got.push(r), 400, timers);
  q.update('a', { gpus: 1 });
  await timers.advance(200);
  q.update('b', { gpus: 2 });
  await timers.advance(200);
  q.update('c', { gpus: 3 });
  await timers.advance(399);
  assert.equal(s.asked.length, 0, 'nothing asked while the user types');
  await timers.advance(1);
  assert.deepEqual(s.asked.map(a => a.query), [{ gpus: 3 }]);
  s.asked[0].resolve('three');
  await flush();
  assert.deepEqual(got, [{ ok: true, key: 'c', value: 'three' }]);
});

test('the same question again asks nothing', async () => {
  const timers = fakeTimers();
  const s = server();
  const q = new e.LatestQuery(x => s.ask(x), () => {}, 400, timers);
  q.update('a', 1);
  await timers.advance(400);
  q.update('a', 1);
  await timers.advance(400);
  assert.equal(s.asked.length, 1);
});

test('at most one in flight; a stale answer is dropped and the newest asked next', async () => {
  const timers = fakeTimers();
  const s = server();
  const got = [];
  const q = new e.LatestQuery(x => s.ask(x), r => got.push(r), 400, timers);
  q.update('a', 'A');
  await timers.advance(400);
  assert.equal(s.asked.length, 1);
  q.update('b', 'B');
  await timers.advance(400);
  assert.equal(s.asked.length, 1, 'a second question waits for the first answer');
  assert.ok(q.inFlight);
  q.update('c', 'C');
  await timers.advance(400);
  s.asked[0].resolve('answer to A');
  await flush();
  assert.deepEqual(got, [], 'the answer to an older question is not shown');
  assert.deepEqual(s.asked.map(a => a.query), ['A', 'C'], 'then the newest is asked, not B');
  s.asked[1].resolve('answer to C');
  await flush();
  assert.deepEqual(got, [{ ok: true, key: 'c', value: 'answer to C' }]);
});

test('an edit during the flight waits its own delay before it is asked', async () => {
  const timers = fakeTimers();
  const s = server();
  const q = new e.LatestQuery(x => s.ask(x), () => {}, 400, timers);
  q.update('a', 'A');
  await timers.advance(400);
  q.update('b', 'B');
  s.asked[0].resolve('x');
  await flush();
  assert.equal(s.asked.length, 1, 'the user may still be typing');
  await timers.advance(400);
  assert.deepEqual(s.asked.map(a => a.query), ['A', 'B']);
});

test('errors are delivered; a withdrawn question (invalid form) drops its answer', async () => {
  const timers = fakeTimers();
  const s = server();
  const got = [];
  const q = new e.LatestQuery(x => s.ask(x), r => got.push(r), 400, timers);
  q.update('a', 'A');
  await timers.advance(400);
  const boom = new Error('400 resources.partition');
  s.asked[0].reject(boom);
  await flush();
  assert.deepEqual(got, [{ ok: false, key: 'a', error: boom }]);
  q.update('b', 'B');
  await timers.advance(400);
  q.update(null, null);
  s.asked[1].resolve('late');
  await timers.advance(1000);
  assert.equal(got.length, 1, 'nothing delivered for a withdrawn question');
  assert.equal(s.asked.length, 2);
  q.update('b', 'B'); // the same question again after a withdrawal: asked again
  await timers.advance(400);
  assert.equal(s.asked.length, 3);
});

test('after dispose nothing is asked or delivered', async () => {
  const timers = fakeTimers();
  const s = server();
  const got = [];
  const q = new e.LatestQuery(x => s.ask(x), r => got.push(r), 400, timers);
  q.update('a', 'A');
  await timers.advance(400);
  q.update('b', 'B');
  q.dispose();
  s.asked[0].resolve('x');
  await timers.advance(1000);
  assert.equal(s.asked.length, 1);
  assert.deepEqual(got, []);
  assert.equal(timers.pending, 0);
});

const ESTIMATE = {
  fits: true,
  fit_reason: null,
  within_limits: true,
  limits_reason: null,
  start: '2026-12-04T19:12:00+00:00',
  start_reason: null,
  nodes: 'gpu03',
  partition: 'gpu',
  hours: 8,
  gpu_hours: 32,
  billing: { units: 12, unit_hours: 96 },
  summary: 'starts in about 12 minutes on gpu03; 4 GPU x 8 h = 32 GPU-h, 96 SU',
  confirm: null
};

test('the line is the server summary; no warning when nothing needs a question', () => {
  assert.deepEqual(e.estimateView(ESTIMATE), {
    line: 'starts in about 12 minutes on gpu03; 4 GPU x 8 h = 32 GPU-h, 96 SU',
    warning: null,
    tone: 'ok'
  });
});

test('confirm and an over-limit request give the warning style, with the reasons', () => {
  const late = e.estimateView({ ...ESTIMATE, confirm: 'it would start in about 3 hours' });
  assert.equal(late.tone, 'warn');
  assert.equal(late.warning, 'it would start in about 3 hours');
  const over = e.estimateView({
    ...ESTIMATE,
    within_limits: false,
    limits_reason: 'resources.gpus: 8 is over the site limit of 4',
    confirm: null
  });
  assert.equal(over.tone, 'warn');
  assert.equal(over.warning, 'resources.gpus: 8 is over the site limit of 4');
  const nofit = e.estimateView({ ...ESTIMATE, fits: false, fit_reason: 'does not fit', confirm: 'does not fit' });
  assert.equal(nofit.warning, 'does not fit', 'the same reason is said once');
});

test('without a summary the figures make the line; an unknown start says why', () => {
  const v = e.estimateView({
    ...ESTIMATE,
    summary: undefined,
    start: null,
    start_reason: 'Slurm could not say: sbatch --test-only refused'
  });
  assert.equal(v.line, 'Slurm could not say: sbatch --test-only refused; 32 GPU-h, 96 SU');
});

test('server text stays text (the view returns strings, never markup)', () => {
  const v = e.estimateView({ ...ESTIMATE, summary: '<img src=x onerror=alert(1)>', confirm: '<b>x</b>' });
  assert.equal(typeof v.line, 'string');
  assert.equal(v.line, '<img src=x onerror=alert(1)>');
  assert.equal(v.warning, '<b>x</b>');
});

test('unavailable estimates in words; request keys ignore field order', () => {
  assert.deepEqual(e.estimateUnavailable(404, 'x'), { text: 'no estimate from this server', refused: false });
  assert.deepEqual(e.estimateUnavailable(503, 'Slurm is down'), { text: 'no estimate: Slurm is down', refused: false });
  assert.deepEqual(e.estimateUnavailable(0, 'Cannot reach the Jupyter server'), {
    text: 'no estimate: Cannot reach the Jupyter server',
    refused: false
  });
  assert.deepEqual(e.estimateUnavailable(400, 'invalid partition specified: x'), {
    text: 'a launch would be refused: invalid partition specified: x',
    refused: true
  });
  assert.equal(
    e.requestKey({ model: 'm', resources: { gpus: 2, time: '1:00:00' } }),
    e.requestKey({ resources: { time: '1:00:00', gpus: 2 }, model: 'm' })
  );
  assert.notEqual(e.requestKey({ model: 'm', resources: { gpus: 2 } }), e.requestKey({ model: 'm', resources: { gpus: 3 } }));
});
