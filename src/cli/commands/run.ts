/**
 * `cordon run --agent NAME [--json] [--timeout 30s] -- CMD…`: create a sandbox,
 * run one command with its output streamed to this terminal, destroy the
 * sandbox (also on Ctrl-C and on error) and exit with the command's exit code.
 * Uses the running control plane, or starts one in this process for the
 * duration of the command when none runs.
 */
import type { Command } from 'commander';
import { resolveAgent } from '../../config/index.js';
import { CordonError, describeError } from '../../errors/index.js';
import { cliContext, printJson } from '../context.js';
import { describeTier, exitCodeOf, exitLine, fmtMs, notStartedCode, openControlPlane, runStreamed, timeoutOption } from './sandbox.js';

/** How much longer than the command the sandbox may live, so the command's own timeout fires first. */
const LIFETIME_MARGIN_MS = 60_000;

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run one command in a fresh sandbox, then destroy it; exits with the command\'s exit code')
    .argument('<command...>', 'the command and its arguments (put `--` before them)')
    .option('--agent <name>', 'agent from cordon.yaml', 'default')
    .option('--timeout <duration>', 'kill the command after this long, e.g. 30s (default 10m)')
    .option('--json', 'print one JSON document {sandbox, tier, exitCode, signal, stdout, stderr, durationMs, startMs}')
    .action(async function runCommand(argv: string[], opts: { agent: string; timeout?: string; json?: boolean }, cmd: Command) {
      const ctx = cliContext(cmd);
      const json = !!opts.json;
      const timeoutMs = timeoutOption(opts.timeout);
      const cp = await openControlPlane(ctx, { startIfNone: true });
      const abort = new AbortController();
      let interrupts = 0;
      const onSignal = (): void => {
        interrupts++;
        if (interrupts > 1) process.exit(130); // a second Ctrl-C: stop waiting for the clean-up
        process.stderr.write('\ninterrupted: stopping the command and destroying the sandbox…\n');
        abort.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let sandboxId: string | undefined;
      try {
        const lifetimeMs = timeoutMs === undefined ? undefined : lifetimeFor(ctx.config, opts.agent, timeoutMs);
        const info = await cp.client.createSandbox({ agent: opts.agent, ...(lifetimeMs !== undefined ? { timeoutMs: lifetimeMs } : {}) });
        sandboxId = info.id;
        if (abort.signal.aborted) {
          process.exitCode = 130;
          return;
        }
        if (!json) process.stderr.write(`sandbox ${info.id} ready in ${fmtMs(info.startMs)}: ${describeTier(info.tier)}\n`);
        let run;
        try {
          run = await runStreamed(cp.client, info.id, argv, { json, ...(timeoutMs !== undefined ? { timeoutMs } : {}), signal: abort.signal });
        } catch (err) {
          if (abort.signal.aborted) {
            process.exitCode = 130;
            return;
          }
          const shellCode = notStartedCode(err);
          if (shellCode === undefined) throw err;
          // As a shell says it: the program is missing (127) or not executable (126).
          if (json) printJson((err as CordonError).toJSON());
          process.stderr.write(`cordon: ${argv[0]}: ${describeError(err)}\n`);
          process.exitCode = shellCode;
          return;
        }
        const r = run.result;
        if (json) {
          printJson({
            sandbox: info.id, agent: info.agent, tier: info.tier, exitCode: r.exitCode, signal: r.signal,
            stdout: run.stdout.toString('utf8'), stderr: run.stderr.toString('utf8'),
            timedOut: r.timedOut, outputTruncated: r.outputTruncated, durationMs: r.durationMs, startMs: info.startMs,
          });
        } else process.stderr.write(exitLine(r, info.id));
        process.exitCode = exitCodeOf(r);
      } finally {
        if (sandboxId) {
          await cp.client.destroySandbox(sandboxId).catch((err: unknown) => {
            process.stderr.write(`cordon: could not destroy ${sandboxId}: ${describeError(err)}\n`);
          });
        }
        await cp.close();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}

/**
 * The sandbox's lifetime for a command timeout: the timeout plus a margin, so
 * the command's own timeout fires first, within the agent's limit when this
 * config knows the agent (a daemon with another config decides for itself).
 */
function lifetimeFor(config: Parameters<typeof resolveAgent>[0], agent: string, timeoutMs: number): number {
  let limitMs = Number.POSITIVE_INFINITY;
  try {
    limitMs = resolveAgent(config, agent).resources.timeoutMs;
  } catch {
    // unknown here: the control plane names the agents it knows
  }
  return Math.max(timeoutMs, Math.min(timeoutMs + LIFETIME_MARGIN_MS, limitMs));
}
