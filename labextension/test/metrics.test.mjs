// Prometheus text parsing, vLLM's figures, counter rates, sparkline geometry (src/metrics.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const m = await load('metrics');

// As vLLM 0.x prints it (trimmed), with a second model name and a created-timestamp series.
const VLLM = `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2"} 2.0
vllm:num_requests_running{engine="0",model_name="other"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smollm2"} 3.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="smollm2"} 0.25
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="smollm2"} 1234.0
vllm:generation_tokens_created{engine="0",model_name="smollm2"} 1.7e9
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="smollm2"} 7.0
`;

test('parses names, labels and values, skipping comments', () => {
  const samples = m.parsePrometheus(VLLM);
  const first = samples[0];
  assert.equal(first.name, 'vllm:num_requests_running');
  assert.deepEqual(first.labels, { engine: '0', model_name: 'smollm2' });
  assert.equal(first.value, 2);
  assert.equal(samples.filter(s => s.name.startsWith('#')).length, 0);
  const bucket = samples.find(s => s.name.endsWith('_bucket'));
  assert.equal(bucket.labels.le, '+Inf');
});

test('label values with escapes, commas and braces; special values; timestamps', () => {
  const [a, b, c, d] = m.parsePrometheus(
    'x{path="a,b}\\"c\\\\d\\n",z="1"} 1.5 1700000000000\n' +
      'y NaN\n' +
      'z{} +Inf\n' +
      'w{a="1",} -3e2\n'
  );
  assert.deepEqual(a.labels, { path: 'a,b}"c\\d\n', z: '1' });
  assert.equal(a.value, 1.5);
  assert.ok(Number.isNaN(b.value));
  assert.equal(c.value, Infinity);
  assert.equal(d.value, -300);
  assert.deepEqual(d.labels, { a: '1' });
});

test('broken lines are skipped, not fatal', () => {
  const samples = m.parsePrometheus('ok 1\n{bad} 2\nx{a="unterminated} 3\nnovalue\ny abc\nz 4\n');
  assert.deepEqual(samples.map(s => [s.name, s.value]), [['ok', 1], ['z', 4]]);
});

test('vLLM snapshot sums over model names, takes the highest KV use', () => {
  const snap = m.vllmSnapshot(m.parsePrometheus(VLLM));
  assert.deepEqual(snap, { running: 3, waiting: 3, kvCache: 0.25, generationTokens: 1234 });
});

test('the older KV-cache name is read too', () => {
  const snap = m.vllmSnapshot(m.parsePrometheus('vllm:gpu_cache_usage_perc{model_name="a"} 0.5\n'));
  assert.equal(snap.kvCache, 0.5);
  assert.equal(snap.running, null);
});

test('an engine without vLLM metrics gives nothing (not zeros)', () => {
  assert.equal(m.vllmSnapshot(m.parsePrometheus('fake:requests_total 4\n')), null);
  assert.equal(m.vllmSnapshot([]), null);
});

test('counter rate per second; unknown after a reset or without elapsed time', () => {
  assert.equal(m.counterRate({ t: 0, v: 100 }, { t: 2000, v: 150 }), 25);
  assert.equal(m.counterRate({ t: 0, v: 100 }, { t: 2000, v: 100 }), 0);
  assert.equal(m.counterRate({ t: 0, v: 100 }, { t: 2000, v: 5 }), null);
  assert.equal(m.counterRate({ t: 1000, v: 1 }, { t: 1000, v: 2 }), null);
});

test('history: tokens/s from the counter, series only for exported figures, window pruned', () => {
  const h = new m.MetricsHistory(60000);
  const snap = (tokens, running) => ({ running, waiting: null, kvCache: null, generationTokens: tokens });
  h.add(0, snap(100, 1));
  assert.equal(h.series.tokensPerSecond.length, 0, 'one counter sample gives no rate yet');
  h.add(2000, snap(140, 2));
  h.add(4000, snap(10, 0)); // engine restarted: no rate for this step
  h.add(6000, snap(30, 1));
  assert.deepEqual(h.series.tokensPerSecond, [{ t: 2000, v: 20 }, { t: 6000, v: 10 }]);
  assert.deepEqual(h.series.running.map(p => p.v), [1, 2, 0, 1]);
  assert.equal(h.series.waiting.length, 0);
  assert.equal(h.series.kvCache.length, 0);
  h.add(63000, snap(40, 0));
  assert.deepEqual(h.series.running.map(p => p.t), [4000, 6000, 63000]); // 60 s before 63 s
  assert.ok(h.hasData);
});

test('sparkline path spans the box; a flat zero lies on the bottom', () => {
  const pts = [{ t: 0, v: 0 }, { t: 50, v: 5 }, { t: 100, v: 10 }];
  assert.equal(m.sparklinePath(pts, 100, 20, 0, 100), 'M0 20 L50 10 L100 0');
  assert.equal(m.sparklinePath([{ t: 0, v: 0 }, { t: 100, v: 0 }], 100, 20, 0, 100), 'M0 20 L100 20');
  assert.equal(m.sparklinePath(pts, 100, 20, 0, 100, 20), 'M0 20 L50 15 L100 10');
  assert.equal(m.sparklinePath([], 100, 20, 0, 100), '');
});

test('figures as written', () => {
  assert.equal(m.formatFigure('kvCache', 0.256), '26%');
  assert.equal(m.formatFigure('tokensPerSecond', 17.34), '17 tok/s');
  assert.equal(m.formatFigure('tokensPerSecond', 3.21), '3.2 tok/s');
  assert.equal(m.formatFigure('running', 2), '2');
});

test('charts use their full width from the first sample, the window once it is full', () => {
  const h = new m.MetricsHistory(300000); // 5 minutes
  const snap = running => ({ running, waiting: null, kvCache: null, generationTokens: null });
  h.add(1000, snap(1));
  // One sample: a level line across the whole box, not a dot at its right edge.
  let span = h.span(1500);
  assert.deepEqual(span, { t0: 1000, t1: 1000, full: false });
  assert.equal(m.sparklinePath(h.series.running, 100, 20, span.t0, span.t1, 2), 'M0 10 L100 10');
  h.add(11000, snap(2));
  h.add(21000, snap(0));
  span = h.span(22000);
  assert.deepEqual(span, { t0: 1000, t1: 21000, full: false });
  assert.equal(m.sparklinePath(h.series.running, 100, 20, span.t0, span.t1), 'M0 10 L50 0 L100 20');
  // Five minutes after the first sample the window is full: the last 5 minutes before now.
  h.add(301000, snap(1));
  span = h.span(302000);
  assert.deepEqual(span, { t0: 2000, t1: 302000, full: true });
  // Before that the old behaviour drew 20 s of samples in the right 7% of the box.
  const old = m.sparklinePath([{ t: 1000, v: 1 }, { t: 21000, v: 1 }], 100, 20, 22000 - 300000, 22000);
  assert.equal(old, 'M93 0 L99.7 0');
});

test('chart span over several series: from the earliest to the latest sample', () => {
  const span = m.chartSpan([[{ t: 5, v: 1 }, { t: 9, v: 1 }], [], [{ t: 3, v: 0 }]], 10, 1000, 3);
  assert.deepEqual(span, { t0: 3, t1: 9, full: false });
  assert.deepEqual(m.chartSpan([[], []], 10, 1000, null), { t0: -990, t1: 10, full: false });
});
