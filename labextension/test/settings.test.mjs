// The sidebar's settings (src/settings.ts): the defaults used before the settings registry
// answers are the schema's (schema/sidebar.json), so the panel's pace does not jump on load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { load } from './load.mjs';

const s = await load('settings');
const schema = JSON.parse(await readFile(new URL('../schema/sidebar.json', import.meta.url), 'utf8'));

test('the defaults are the schema defaults, one for each setting', () => {
  const declared = Object.fromEntries(
    Object.entries(schema.properties).map(([name, spec]) => [name, spec.default]));
  assert.deepEqual(s.DEFAULT_SETTINGS, declared);
});
