// Unit test of the "Copy snippet" text, run by node's own test runner over the compiled lib/:
//   npm run build:lib && npm test
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

// lib/ is an ES module without "type": "module" in package.json: load its text as one.
// OSIRE_SNIPPET_JS names another compiled snippet.js (tests/client/test_snippet.py uses it).
const path = process.env.OSIRE_SNIPPET_JS || new URL('../lib/snippet.js', import.meta.url);
const source = await readFile(path, 'utf8');
const { openaiSnippet } = await import(
  'data:text/javascript;base64,' + Buffer.from(source).toString('base64')
);

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
