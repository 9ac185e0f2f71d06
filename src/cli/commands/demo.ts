/**
 * `cordon demo [--provider NAME] [--model NAME] [--json]`: the whole system in
 * one run (see src/demo/): an agent loop in a microVM that talks to a model
 * through the gateway, calls an allowed API with an injected secret, is
 * refused the metadata endpoint and an unlisted host, waits for an operator's
 * approval, and ends with the audit log verified. Exits 0 only when every
 * expected outcome is in the audit log; otherwise 1, naming what did not
 * happen.
 */
import type { Command } from 'commander';
import { runDemo, silentReporter, terminalReporter } from '../../demo/index.js';
import { cliContext, printJson } from '../context.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run an agent in a microVM and watch every door: model, secret, refused requests, an approval, the audit log')
    .option('--provider <name>', 'a provider from cordon.yaml (default: the built-in scripted provider, no key needed)')
    .option('--model <name>', 'the model to ask that provider for (default: per provider type)')
    .option('--json', 'print one JSON summary {ok, outcomes, failed, …} and nothing else')
    .action(async function demoCommand(opts: { provider?: string; model?: string; json?: boolean }, cmd: Command) {
      const ctx = cliContext(cmd);
      const json = !!opts.json;
      const color = process.stdout.isTTY === true && !process.env.NO_COLOR && process.env.TERM !== 'dumb';
      const reporter = json ? silentReporter : terminalReporter((t) => void process.stdout.write(t), { color });
      const abort = new AbortController();
      let interrupts = 0;
      const onSignal = (): void => {
        interrupts++;
        if (interrupts > 1) process.exit(130);
        process.stderr.write('\ninterrupted: stopping the agent and cleaning up…\n');
        abort.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const result = await runDemo({
          home: ctx.home, userConfig: ctx.config, reporter, signal: abort.signal,
          ...(opts.provider !== undefined ? { provider: opts.provider } : {}),
          ...(opts.model !== undefined ? { model: opts.model } : {}),
        });
        if (json) printJson(result);
        else if (result.ok) process.stdout.write(`\ncordon demo: every expected outcome happened (${(result.durationMs / 1000).toFixed(1)} s)\n`);
        else process.stdout.write(`\ncordon demo FAILED: did not happen: ${result.failed.join(', ') || 'the sandbox never started'}\n`);
        process.exitCode = result.ok ? 0 : 1;
      } catch (err) {
        if (!abort.signal.aborted) throw err;
        process.stderr.write('cordon demo: interrupted; the sandbox and the demo control plane were stopped\n');
        process.exitCode = 130;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
