#!/usr/bin/env node
// The `cordon` command. The CLI itself lives in src/cli (compiled to dist/cli).
import { main } from '../dist/cli/main.js';

main(process.argv).then(
  (code) => { process.exitCode = code; },
  (err) => {
    process.stderr.write(`cordon: internal error: ${err && err.stack ? err.stack : String(err)}\n`);
    process.exitCode = 70;
  },
);
