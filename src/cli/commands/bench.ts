/**
 * `cordon bench PART [--json]`: benchmarks. Figures are grouped by the system
 * measured, with units in the key names, so runs compare across machines.
 */
import type { Command } from 'commander';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchAudit, benchSandbox } from '../../bench/index.js';
import { InvalidInputError } from '../../errors/index.js';
import { createBackends } from '../../sandbox/index.js';
import { cliHome, printJson } from '../context.js';

const PARTS = ['audit', 'sandbox'] as const;

function wholeNumber(s: string, name: string, max: number): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new InvalidInputError(`${name} ${JSON.stringify(s)} is out of range`, { fix: `use a whole number from 1 to ${max}` });
  }
  return n;
}

export function registerBench(program: Command): void {
  program
    .command('bench <part>')
    .description(`run a benchmark (${PARTS.join(', ')})`)
    .option('--json', 'print JSON')
    .option('--events <n>', 'audit: how many events to append', '200000')
    .option('--cycles <n>', 'sandbox: create → exec → destroy cycles per back end', '50')
    .action(async function benchCommand(part: string, opts: { json?: boolean; events: string; cycles: string }, cmd: Command) {
      if (!(PARTS as readonly string[]).includes(part)) {
        throw new InvalidInputError(`unknown benchmark ${JSON.stringify(part)}`, { fix: `choose one of: ${PARTS.join(', ')}` });
      }
      const log = (line: string) => { if (!opts.json) process.stderr.write(line + '\n'); };
      if (part === 'sandbox') {
        const cycles = wholeNumber(opts.cycles, '--cycles', 10_000);
        const home = cliHome(cmd);
        log(`bench sandbox: microvm, gvisor and bubblewrap side by side, ${cycles} cycles each…`);
        const result = await benchSandbox({ home, cycles, backends: createBackends({ home }), onProgress: log });
        if (opts.json) printJson(result);
        else process.stdout.write(JSON.stringify(result, null, 2) + '\n');
        return;
      }
      const events = wholeNumber(opts.events, '--events', 10_000_000);
      const dir = mkdtempSync(join(tmpdir(), 'cordon-bench-'));
      try {
        log(`bench audit: appending ${events} events with the hash chain on SQLite…`);
        const result = await benchAudit({ events, dir });
        if (opts.json) printJson(result);
        else {
          const c = result.cordon;
          process.stdout.write(
            `audit append: ${Math.round(c.appendPerSec).toLocaleString('en')} events/s  (target ≥ 20,000)\n` +
              `audit verify: ${Math.round(c.verifyPerSec).toLocaleString('en')} events/s  (target ≥ 200,000)\n` +
              `events: ${c.events}\n`,
          );
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
}
