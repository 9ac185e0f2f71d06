/** `cordon config check [FILE] [--json]`: validate a cordon.yaml and list every problem. */
import type { Command } from 'commander';
import { loadConfig } from '../../config/index.js';
import { ConfigError } from '../../errors/index.js';
import { printJson } from '../context.js';

export function registerConfig(program: Command): void {
  const config = program.command('config').description('work with cordon.yaml');
  config
    .command('check [file]')
    .description('validate a config file (default: $CORDON_CONFIG or ./cordon.yaml)')
    .option('--json', 'print JSON')
    .action(function configCheck(file: string | undefined, opts: { json?: boolean }, cmd: Command) {
      const root = cmd.parent?.parent;
      const path = file ?? root?.opts<{ config?: string }>().config;
      try {
        const cfg = loadConfig(path);
        const agents = Object.keys(cfg.agents).sort();
        if (opts.json) printJson({ ok: true, agents });
        else process.stdout.write(`config ok: ${agents.length} agent(s): ${agents.join(', ')}\n`);
      } catch (err) {
        if (err instanceof ConfigError && opts.json) {
          printJson({ ok: false, ...err.toJSON() });
          process.stderr.write(`cordon: ${err.describe()}\n`);
          process.exitCode = 1;
          return;
        }
        throw err;
      }
    });
}
