/**
 * The `cordon` command line. Each command lives in its own file under
 * `commands/` and registers itself on the program. Errors are printed as one
 * message plus a fix, never as a bare stack trace; `--json` commands print one
 * JSON document on stdout and nothing else there.
 */
import { Command, CommanderError } from 'commander';
import { CordonError, describeError } from '../errors/index.js';
import { CORDON_VERSION } from '../version.js';
import { registerUp } from './commands/up.js';
import { registerDoctor } from './commands/doctor.js';
import { registerAudit } from './commands/audit.js';
import { registerConfig } from './commands/config.js';
import { registerBench } from './commands/bench.js';
import { registerVersion } from './commands/version.js';
import { registerRun } from './commands/run.js';
import { registerSandbox } from './commands/sandbox.js';
import { registerImage } from './commands/image.js';
import { registerSecrets } from './commands/secrets.js';
import { registerApprovals } from './commands/approvals.js';
import { registerTunnel } from './commands/tunnel.js';
import { registerAlerts } from './commands/alerts.js';
import { registerBaseline } from './commands/baseline.js';
import { registerDemo } from './commands/demo.js';
import { registerRedteam } from './commands/redteam.js';
import { registerTools } from './commands/tools.js';

/** Exit codes used by every command. */
export const EXIT = { ok: 0, failed: 1, usage: 2, internal: 70 } as const;

/** Build the program (exported for tests). */
export function buildProgram(): Command {
  const program = new Command('cordon')
    .description('Run autonomous AI agents in microVMs without trusting them')
    .version(CORDON_VERSION, '-V, --version')
    .option('--home <dir>', 'state directory (default: $CORDON_HOME or ~/.cordon)')
    .option('-c, --config <file>', 'config file (default: $CORDON_CONFIG or ./cordon.yaml)')
    .showHelpAfterError()
    .exitOverride();
  for (const register of [
    registerUp, registerDemo, registerRun, registerSandbox, registerImage, registerSecrets, registerApprovals, registerTunnel, registerAlerts, registerBaseline, registerDoctor, registerAudit, registerConfig, registerBench, registerRedteam, registerTools, registerVersion,
  ]) {
    register(program);
  }
  return program;
}

/** Run the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed help/usage/version text
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.ok;
      return EXIT.usage;
    }
    const wantsJson = argv.includes('--json');
    if (wantsJson && err instanceof CordonError) {
      process.stdout.write(JSON.stringify(err.toJSON()) + '\n');
    }
    process.stderr.write(`cordon: ${describeError(err)}\n`);
    if (!(err instanceof CordonError) && process.env.CORDON_DEBUG) process.stderr.write(`${(err as Error)?.stack}\n`);
    return err instanceof CordonError ? EXIT.failed : EXIT.internal;
  }
}
