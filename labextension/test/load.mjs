// Loads a compiled pure module (lib/<name>.js) for node's test runner.
// lib/ is an ES module without "type": "module" in package.json: load its text as one.
// OSIRE_LIB_DIR names another folder of compiled modules (pytest compiles to a temp folder).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export async function load(name) {
  const dir = process.env.OSIRE_LIB_DIR || fileURLToPath(new URL('../lib/', import.meta.url));
  const source = await readFile(join(dir, `${name}.js`), 'utf8');
  return import('data:text/javascript;base64,' + Buffer.from(source).toString('base64'));
}
