// Unit test of the "Copy code" / "Insert" text, run by node's own test runner over the compiled
// lib/ (npm run build:lib && npm test; pytest: tests/ui/test_ts_units.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { load } from './load.mjs';

// OSIRE_SNIPPET_JS names another compiled snippet.js (tests/client/test_snippet.py uses it).
const { openaiSnippet } = process.env.OSIRE_SNIPPET_JS
  ? await import('data:text/javascript;base64,' +
      Buffer.from(await readFile(process.env.OSIRE_SNIPPET_JS, 'utf8')).toString('base64'))
  : await load('snippet');

test('the snippet never contains the token or the server URL', () => {
  const text = openaiSnippet('http://127.0.0.1:8888/osire/v1', 'fake-chat', 'SECRET');
  assert.ok(!text.includes('SECRET'));
  assert.ok(!text.includes('127.0.0.1'));
  assert.ok(!text.includes('JUPYTERHUB_API_TOKEN'));
});

test('the snippet uses client() and names the model as a Python string', () => {
  const text = openaiSnippet('/osire/v1', 'llama "3"\n', '');
  assert.match(text, /^from jupyter_osire_llm import client/);
  assert.match(text, /llm = client\(\)/);
  assert.ok(text.includes('model="llama \\"3\\"\\n",'));
});
