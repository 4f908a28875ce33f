// A catalog model's size line (src/sizes.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const s = await load('sizes');

test('a sized model shows parameters, what holds it and the context left', () => {
  const size = {
    parameters: 70553706496, weight_bytes: 141107412992,
    summary: '141.1 GB of weights: 2 x H100 80G, or 4 x A100 40G',
    options: [{ gpu_type: 'h100', gpus: 2, nodes: 1, context_tokens: 41233 }]
  };
  assert.equal(s.sizeLine(size),
    '71B parameters · 141.1 GB of weights: 2 x H100 80G, or 4 x A100 40G · 41k tokens of KV cache');
  assert.equal(s.sizeLine({ parameters: 134515008, weight_bytes: 538060032 }),
    '135M parameters · 538 MB of weights');
});

test('an unsized model says so, a model without size data says nothing', () => {
  assert.equal(s.sizeLine({ note: 'size unknown: /x: not a folder' }), 'size unknown');
  assert.equal(s.sizeLine(undefined), '');
});

test('only a size refusal offers to launch anyway', () => {
  assert.ok(s.refusedForSize('resources.gpus', "model 'x' does not fit: 1 x H100 ..."));
  assert.ok(!s.refusedForSize('resources.gpus', 'gpus: at most 8'));
  assert.ok(!s.refusedForSize('model', 'does not fit'));
});
