// A batch in words and figures (src/batches.ts): progress, status wording, actions, file names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const b = await load('batches');
const words = await load('states'); // explainReason and formatDuration, as the sidebar passes them
const NOW = 1_700_000_000;

const batch = (status, counts = {}, osire = {}, extra = {}) => ({
  id: 'batch_0123abcd', endpoint: '/v1/chat/completions', status, input_file_id: 'file-1',
  output_file_id: null, error_file_id: null, created_at: NOW - 90, in_progress_at: null,
  request_counts: { total: 20, completed: 0, failed: 0, ...counts }, model: 'smollm2',
  osire: { reason: null, job_id: '42', jobs: ['42'], node: null, left: 20, resumable: false,
    log_tail: null, ...osire },
  ...extra
});

test('progress: done/total, the failed count, the bar\'s shares and words for screen readers', () => {
  const p = b.batchProgress(batch('in_progress', { completed: 12, failed: 1 }));
  assert.equal(p.text, '12/20');
  assert.equal(p.failedText, '1 failed');
  assert.equal(p.answered, 13);
  assert.equal(p.completedPercent, 60);
  assert.equal(p.failedPercent, 5);
  assert.equal(p.valueText, '12 of 20 requests done, 1 failed');
  const none = b.batchProgress(batch('queued'));
  assert.equal(none.text, '0/20');
  assert.equal(none.failedText, null);
  assert.equal(none.completedPercent, 0);
  assert.equal(none.valueText, '0 of 20 requests done');
  const done = b.batchProgress(batch('completed', { completed: 20 }));
  assert.equal(done.text, '20/20');
  assert.equal(done.completedPercent, 100);
  assert.equal(b.batchProgress(batch('in_progress', { total: 3, completed: 1 })).completedPercent,
    33.3);
});

test('progress never leaves 0..total, even with odd counts', () => {
  const p = b.batchProgress(batch('in_progress', { total: 5, completed: 9, failed: 2 }));
  assert.deepEqual([p.completed, p.failed, p.answered, p.completedPercent, p.failedPercent],
    [5, 0, 5, 100, 0]);
  const empty = b.batchProgress(batch('validating', { total: 0 }));
  assert.deepEqual([empty.text, empty.completedPercent], ['0/0', 0]);
  assert.equal(b.batchProgress(batch('queued', { total: 1 })).valueText, '0 of 1 request done');
});

test('queued: Slurm\'s reason, explained, and how long it has waited', () => {
  const w = b.describeBatch(batch('queued', {}, { reason: 'Resources' }), NOW, words);
  assert.equal(w.summary, 'waiting in the queue (Resources) · 1m 30s');
  assert.deepEqual(w.details, ['Slurm: Resources: waiting for GPUs, CPUs or memory to become free']);
  const plain = b.describeBatch(batch('queued'), NOW, words);
  assert.equal(plain.summary, 'waiting in the queue · 1m 30s');
  assert.deepEqual(plain.details, []);
});

test('running: where and for how long; a resumed batch says so (its first run\'s times are old)', () => {
  const w = b.describeBatch(batch('in_progress', {}, { node: 'gpu07' },
    { in_progress_at: NOW - 75 }), NOW, words);
  assert.equal(w.summary, 'answering requests on gpu07 · 1m 15s');
  const resumed = b.describeBatch(batch('in_progress', { completed: 12 },
    { jobs: ['42', '57'], left: 8 }, { in_progress_at: NOW - 4000 }), NOW, words);
  assert.equal(resumed.summary, 'answering requests');
  assert.deepEqual(resumed.details, ['resumed: run 2, 8 requests left']);
  const queuedAgain = b.describeBatch(batch('queued', {}, { jobs: ['42', '57'], reason: 'Priority' }),
    NOW, words);
  assert.equal(queuedAgain.summary, 'waiting in the queue (Priority)');
});

test('ended: why, and what a resume would do', () => {
  const failed = batch('failed', { completed: 3 }, {
    reason: 'the job failed (exit code 1); 3 of 20 requests answered', left: 17, resumable: true });
  assert.deepEqual(b.describeBatch(failed, NOW, words), {
    summary: 'the job failed (exit code 1); 3 of 20 requests answered',
    details: ['17 requests left: Resume answers only those']
  });
  const expired = batch('expired', {}, { reason: "the job's time limit ended it after 5 of 20 requests; resume it for the rest" });
  assert.match(b.describeBatch(expired, NOW, words).summary, /^the job's time limit/);
  const cancelled = batch('cancelled', { completed: 7 }, { reason: 'cancelled by user', left: 13,
    resumable: true });
  assert.deepEqual(b.describeBatch(cancelled, NOW, words), {
    summary: 'cancelled by user', details: ['13 requests left: Resume answers only those']
  });
  assert.equal(b.describeBatch(batch('completed', { completed: 20 }, { left: 0 }), NOW, words).summary,
    'finished: every request answered');
  assert.equal(b.describeBatch(batch('completed', { completed: 19, failed: 1 }, { left: 0 }), NOW,
    words).summary, 'finished: 1 request refused by the engine (see the errors file)');
  assert.equal(b.describeBatch(batch('cancelling'), NOW, words).summary,
    'cancelling the Slurm job; the answers so far are kept');
  assert.equal(b.describeBatch(batch('validating'), NOW, words).summary,
    'checking the input and submitting the job');
});

test('a batch without our details (another server\'s shape) still reads', () => {
  const w = b.describeBatch(batch('failed', { completed: 2 }, {}, { osire: null }), NOW, words);
  assert.equal(w.summary, 'failed');
  assert.deepEqual(w.details, []);
});

test('labels and live statuses', () => {
  assert.equal(b.batchStatusLabel('in_progress'), 'Running');
  assert.equal(b.batchStatusLabel('cancelled'), 'Cancelled');
  assert.equal(b.batchStatusLabel('something_new'), 'something_new');
  for (const s of ['validating', 'queued', 'in_progress', 'cancelling']) {
    assert.ok(b.isLiveBatch(batch(s)), s);
  }
  for (const s of ['completed', 'failed', 'expired', 'cancelled']) {
    assert.ok(!b.isLiveBatch(batch(s)), s);
  }
});

test('actions: Cancel while live, Resume when resumable, downloads when there are files, Remove once ended', () => {
  const running = b.batchActions(batch('in_progress'));
  assert.deepEqual(running, { cancel: true, resume: false, results: false, errors: false, remove: false });
  assert.equal(b.batchActions(batch('in_progress'), true).cancel, false, 'a cancel in flight');
  assert.equal(b.batchActions(batch('cancelling')).cancel, false);
  assert.equal(b.batchActions(batch('cancelling')).remove, false, 'not until its job has ended');
  const cancelled = batch('cancelled', { completed: 7 }, { resumable: true },
    { output_file_id: 'file-batch_0123abcd-output' });
  assert.deepEqual(b.batchActions(cancelled),
    { cancel: false, resume: true, results: true, errors: false, remove: true });
  assert.equal(b.batchActions(cancelled, true).resume, false, 'a resume in flight');
  assert.equal(b.batchActions(cancelled, true).remove, false, 'nor a removal');
  const done = batch('completed', { completed: 19, failed: 1 }, { resumable: false },
    { output_file_id: 'o', error_file_id: 'e' });
  assert.deepEqual(b.batchActions(done),
    { cancel: false, resume: false, results: true, errors: true, remove: true });
});

test('result file names are safe file names', () => {
  assert.equal(b.resultFileName(batch('completed'), 'output'), 'batch_0123abcd-output.jsonl');
  assert.equal(b.resultFileName({ ...batch('completed'), id: '../x y' }, 'errors'), '_x_y-errors.jsonl');
});

test('ended batches: those live before and ended now, none on the first load', () => {
  const running = batch('in_progress');
  const done = batch('completed', { completed: 20 });
  assert.deepEqual(b.endedBatches(null, [done]), []);
  assert.deepEqual(b.endedBatches([running], [done]).map(x => x.id), ['batch_0123abcd']);
  assert.deepEqual(b.endedBatches([done], [done]), []);
  assert.deepEqual(b.endedBatches([running], [running]), []);
});

test('the notice of an ended batch: counts, the reason, louder when it went wrong', () => {
  assert.deepEqual(b.batchEndNotice(batch('completed', { completed: 20 })),
    { kind: 'success', text: 'Batch of smollm2 completed: 20/20 done' });
  assert.equal(b.batchEndNotice(batch('completed', { completed: 19, failed: 1 })).kind, 'warning');
  const failed = b.batchEndNotice(batch('failed', { completed: 3 }, { reason: 'out of memory' }));
  assert.deepEqual(failed, { kind: 'error', text: 'Batch of smollm2 failed: 3/20 done (out of memory)' });
  assert.equal(b.batchEndNotice(batch('cancelled', { completed: 5 })).kind, 'warning');
});
