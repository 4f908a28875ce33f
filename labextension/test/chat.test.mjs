// The playground's stream handling (src/chat.ts): SSE split across any chunking, chunks, figures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { load } from './load.mjs';

const c = await load('chat');

const STREAM =
  'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n' +
  'data: {"choices":[{"index":0,"delta":{"content":"The"},"finish_reason":null}]}\n\n' +
  'data: {"choices":[{"index":0,"delta":{"content":" capital"},"finish_reason":null}]}\n\n' +
  'data: {"choices":[{"index":0,"delta":{"content":" is Paris."},"finish_reason":"stop"}]}\n\n' +
  'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}\n\n' +
  'data: [DONE]\n\n';

test('events are the same whatever the network chunking', () => {
  const whole = new c.SseParser().push(STREAM);
  assert.equal(whole.length, 6);
  for (const size of [1, 3, 7, 64]) {
    const parser = new c.SseParser();
    const events = [];
    for (let i = 0; i < STREAM.length; i += size) {
      events.push(...parser.push(STREAM.slice(i, i + size)));
    }
    events.push(...parser.end());
    assert.deepEqual(events, whole, `chunks of ${size}`);
  }
});

test('CRLF and CR line ends, comments, multi-line data, an unterminated last event', () => {
  const p = new c.SseParser();
  assert.deepEqual(p.push(': keep-alive\r\n\r\ndata: a\r\ndata: b\r\n\r\nevent: x\rdata:c\r\r'), ['a\nb']);
  assert.deepEqual(p.push('data: tail'), ['c'], 'a final CR is known to end a line once more comes');
  assert.deepEqual(p.end(), ['tail']);
});

test('a CR at the end of a chunk waits for its LF', () => {
  const p = new c.SseParser();
  assert.deepEqual(p.push('data: x\r'), []);
  assert.deepEqual(p.push('\n\r\n'), ['x']);
});

test('chunks: content, finish reason, usage, [DONE], in-stream errors', () => {
  const events = new c.SseParser().push(STREAM).map(c.readChunk);
  assert.equal(events.map(e => e.content).join(''), 'The capital is Paris.');
  assert.equal(events[3].finishReason, 'stop');
  assert.equal(events[4].completionTokens, 6);
  assert.ok(events[5].done);
  const err = c.readChunk('{"error":{"message":"engine died","type":"upstream_error","code":502}}');
  assert.equal(err.error, 'engine died');
  assert.match(c.readChunk('not json').error, /unreadable/);
});

test('time to first token and tokens per second', () => {
  const stats = new c.StreamStats(1000);
  assert.equal(stats.timeToFirstToken, null);
  const chunk = content => ({ content, finishReason: null, completionTokens: null, error: null, done: false });
  stats.add(1100, chunk('')); // the role chunk is not a token
  stats.add(1500, chunk('a'));
  assert.equal(stats.timeToFirstToken, 0.5);
  assert.equal(stats.tokensPerSecond(), null, 'one token: no speed yet');
  stats.add(2000, chunk('b'));
  stats.add(2500, chunk('c'));
  assert.equal(stats.tokens, 3);
  assert.equal(stats.tokensPerSecond(), 2); // 2 tokens after the first, in 1 s
  stats.add(2600, { ...chunk(''), completionTokens: 5 });
  assert.equal(stats.tokens, 5); // the usage figure wins over counting chunks
  assert.equal(stats.tokensPerSecond(), 4);
  assert.equal(stats.tokensPerSecond(3500), 2); // while streaming, time runs on
});

test('request body: system prompt first, streaming with usage', () => {
  const body = c.chatRequestBody(
    { model: 'm', system: 'Be brief.', temperature: 0.2, maxTokens: 64 },
    [{ role: 'user', content: 'hi' }]
  );
  assert.deepEqual(body, {
    model: 'm',
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }],
    temperature: 0.2, max_tokens: 64, stream: true, stream_options: { include_usage: true }
  });
  const noSystem = c.chatRequestBody({ model: 'm', system: ' ', temperature: 0, maxTokens: 1 }, []);
  assert.deepEqual(noSystem.messages, []);
});

test('model text: no raw HTML and no image reaches the Markdown renderer; code shows as sent', () => {
  const reply = 'Hi <img src=x onerror="window.__pwned=1"> & <script>x()</script> ![t](https://e/x.png)';
  const inert = c.inertMarkdown(reply);
  assert.ok(!inert.includes('<'), inert);
  assert.ok(!inert.includes('!['), inert);
  assert.equal(inert, 'Hi &lt;img src=x onerror="window.__pwned=1"> &amp; &lt;script>x()&lt;/script> &#33;[t](https://e/x.png)');
  assert.equal(c.restoreVerbatim(inert), reply);
  // Text that already held entities comes back as it was, not decoded one step further.
  for (const code of ['a &lt; b && c', 'x = "&#33;["', '&amp;lt;', 'if a<b: pass']) {
    assert.equal(c.restoreVerbatim(c.inertMarkdown(code)), code);
  }
});
