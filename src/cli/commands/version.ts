/** `cordon version [--json]`: the version of cordon and its runtime. */
import type { Command } from 'commander';
import { CORDON_VERSION } from '../../version.js';
import { printJson } from '../context.js';

export function registerVersion(program: Command): void {
  program
    .command('version')
    .description('print the version')
    .option('--json', 'print JSON')
    .action(function versionCommand(opts: { json?: boolean }) {
      const v = { cordon: CORDON_VERSION, node: process.version, platform: `${process.platform}-${process.arch}` };
      if (opts.json) printJson(v);
      else process.stdout.write(`cordon ${v.cordon} (node ${v.node}, ${v.platform})\n`);
    });
}
