// The usage section's sums, days and bars (src/usagecalc.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const u = await load('usagecalc');

const ROWS = [
  { model: 'small', day: '2026-12-01', requests: 10, prompt_tokens: 1000, completion_tokens: 500, gpu_hours: 0.5, billing: null },
  { model: 'big', day: '2026-12-01', requests: 2, prompt_tokens: 100, completion_tokens: 50, gpu_hours: 8, billing: 24 },
  { model: 'small', day: '2026-12-03', requests: 5, prompt_tokens: 200, completion_tokens: 300, gpu_hours: 0.25, billing: 1.5 },
  { model: 'big', day: '2026-12-04', requests: 1, prompt_tokens: 10, completion_tokens: 5, gpu_hours: 4, billing: 12 }
];

test('30 days back from today, in UTC', () => {
  const now = Date.parse('2026-12-04T23:30:00Z');
  assert.equal(u.sinceDay(now), '2026-11-05');
  assert.equal(u.sinceDay(now, 1), '2026-12-04');
  assert.equal(u.isoDay(now), '2026-12-04');
});

test('asked at most once a minute', () => {
  assert.ok(u.usageDue(1000, 0), 'never asked: due');
  assert.ok(!u.usageDue(60000, 1000));
  assert.ok(u.usageDue(61000, 1000));
});

test('sums per model, the most GPU hours first; billing null when none', () => {
  const models = u.sumByModel(ROWS);
  assert.deepEqual(models.map(m => m.model), ['big', 'small']);
  assert.deepEqual(models[0], { model: 'big', requests: 3, prompt_tokens: 110, completion_tokens: 55, gpu_hours: 12, billing: 36 });
  assert.equal(models[1].billing, 1.5);
  assert.equal(u.sumByModel([ROWS[0]])[0].billing, null);
  const all = u.total(models);
  assert.equal(all.requests, 18);
  assert.equal(all.gpu_hours, 12.75);
  assert.equal(all.billing, 37.5);
});

test('rows of another shape count as zero, not NaN', () => {
  const [m] = u.sumByModel([{ model: 'x', day: '2026-12-01', requests: null, gpu_hours: 'a' }]);
  assert.deepEqual([m.requests, m.gpu_hours, m.prompt_tokens, m.billing], [0, 0, 0, null]);
});

test('one value per day, days without use are zero, models summed', () => {
  const gpu = u.dailySeries(ROWS, '2026-12-01', '2026-12-04', 'gpu_hours');
  assert.deepEqual(gpu, [
    { day: '2026-12-01', value: 8.5 },
    { day: '2026-12-02', value: 0 },
    { day: '2026-12-03', value: 0.25 },
    { day: '2026-12-04', value: 4 }
  ]);
  const tokens = u.dailySeries(ROWS, '2026-12-01', '2026-12-02', 'tokens');
  assert.deepEqual(tokens.map(d => d.value), [1650, 0]);
  assert.deepEqual(u.dailySeries(ROWS, 'nonsense', '2026-12-02', 'tokens'), []);
  assert.equal(u.dailySeries([], '2026-11-05', '2026-12-04', 'tokens').length, 30);
});

test('bars fill the width from the first day; the tallest reaches the top', () => {
  const series = [
    { day: 'a', value: 2 },
    { day: 'b', value: 0 },
    { day: 'c', value: 1 },
    { day: 'd', value: 0.001 }
  ];
  const bars = u.barGeometry(series, 100, 40, 1);
  assert.deepEqual(bars.map(b => b.x), [0, 25, 50, 75]);
  assert.ok(bars.every(b => b.width === 24));
  assert.deepEqual([bars[0].y, bars[0].height], [0, 40]);
  assert.deepEqual([bars[1].y, bars[1].height], [40, 0]);
  assert.deepEqual([bars[2].y, bars[2].height], [20, 20]);
  assert.equal(bars[3].height, 1, 'a little use still shows');
  assert.ok(bars[3].x + bars[3].width <= 100);
  assert.deepEqual(u.barGeometry([], 100, 40), []);
  const flat = u.barGeometry([{ day: 'a', value: 0 }], 100, 40);
  assert.equal(flat[0].height, 0);
});

test('figures as written', () => {
  assert.equal(u.formatCount(950), '950');
  assert.equal(u.formatCount(1234), '1.2k');
  assert.equal(u.formatCount(34567), '35k');
  assert.equal(u.formatCount(1500000), '1.5M');
  assert.equal(u.formatHours(0), '0');
  assert.equal(u.formatHours(0.021), '0.02');
  assert.equal(u.formatHours(0.001), '<0.01');
  assert.equal(u.formatHours(1.55), '1.6');
  assert.equal(u.formatHours(12.4), '12');
});
