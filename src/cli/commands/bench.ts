/**
 * `cordon bench PART [--json]`: benchmarks. Figures are grouped by the system
 * measured, with units in the key names, so runs compare across machines.
 */
import type { Command } from 'commander';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchAudit } from '../../bench/index.js';
import { InvalidInputError } from '../../errors/index.js';
import { printJson } from '../context.js';

const PARTS = ['audit'] as const;

export function registerBench(program: Command): void {
  program
    .command('bench <part>')
    .description(`run a benchmark (${PARTS.join(', ')})`)
    .option('--json', 'print JSON')
    .option('--events <n>', 'audit: how many events to append', '200000')
    .action(async function benchCommand(part: string, opts: { json?: boolean; events: string }) {
      if (!(PARTS as readonly string[]).includes(part)) {
        throw new InvalidInputError(`unknown benchmark ${JSON.stringify(part)}`, { fix: `choose one of: ${PARTS.join(', ')}` });
      }
      const events = Number(opts.events);
      if (!Number.isInteger(events) || events < 1 || events > 10_000_000) {
        throw new InvalidInputError(`--events ${JSON.stringify(opts.events)} is out of range`, { fix: 'use a whole number from 1 to 10000000' });
      }
      const dir = mkdtempSync(join(tmpdir(), 'cordon-bench-'));
      try {
        if (!opts.json) process.stderr.write(`bench audit: appending ${events} events with the hash chain on SQLite…\n`);
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
