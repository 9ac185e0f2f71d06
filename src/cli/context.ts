/**
 * What every command needs: the state directory and the config, resolved from
 * the global options and the environment.
 */
import type { Command } from 'commander';
import { loadConfig, type CordonConfig } from '../config/index.js';
import { cordonHome } from '../util/index.js';

export interface CliContext {
  home: string;
  config: CordonConfig;
}

/** Resolve `--home` / `--config` from the root program's options. */
export function cliContext(cmd: Command): CliContext {
  const root = rootOf(cmd);
  const opts = root.opts<{ home?: string; config?: string }>();
  const home = opts.home ? cordonHome({ CORDON_HOME: opts.home }) : cordonHome();
  const config = loadConfig(opts.config);
  return { home, config };
}

/** Home only (for commands that must work even with a broken config). */
export function cliHome(cmd: Command): string {
  const opts = rootOf(cmd).opts<{ home?: string }>();
  return opts.home ? cordonHome({ CORDON_HOME: opts.home }) : cordonHome();
}

function rootOf(cmd: Command): Command {
  let c = cmd;
  while (c.parent) c = c.parent;
  return c;
}

/** Print one JSON document on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
