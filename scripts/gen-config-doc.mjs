#!/usr/bin/env node
// Writes docs/configuration.md from the zod schema (src/config/reference.ts).
//   node --import tsx scripts/gen-config-doc.mjs          # write the file
//   node --import tsx scripts/gen-config-doc.mjs --check  # exit 1 when the file is stale
// src/config/reference.test.ts runs the same check as part of `npm test`.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const target = join(root, 'docs', 'configuration.md');

let render;
try {
  ({ renderConfigReference: render } = await import('../src/config/reference.ts'));
} catch (err) {
  if (err?.code !== 'ERR_UNKNOWN_FILE_EXTENSION') throw err;
  process.stderr.write('gen-config-doc: run it with the TypeScript loader: node --import tsx scripts/gen-config-doc.mjs\n');
  process.exit(2);
}

const text = render();
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(target, 'utf8');
  } catch {
    current = '';
  }
  if (current !== text) {
    process.stderr.write('docs/configuration.md is stale: run node --import tsx scripts/gen-config-doc.mjs\n');
    process.exit(1);
  }
  process.stdout.write('docs/configuration.md is up to date\n');
} else {
  writeFileSync(target, text);
  process.stdout.write(`wrote ${target}\n`);
}
