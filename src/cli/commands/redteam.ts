/**
 * `cordon redteam [--profile protected|unprotected] [--json FILE] [--html FILE]
 * [--only IDS] [--datasets DIR] [--agent NAME] [--list]`: attack a scratch
 * deployment built from this cordon.yaml by `startControlPlane` (same back
 * ends and image; identity, approvals, audit and detection settings; tools
 * gateway and tunnels included) from inside real sandboxes and score every
 * attack by outcome. The operator's own store, keys and audit log are never
 * touched: the deployment lives in a temporary home that is removed at the
 * end (it shares only the image cache). Progress goes to stderr (one line per
 * attack when stderr is not a terminal or CI is set), the summary to stdout.
 * The scorecard is kept in `$CORDON_HOME/redteam/latest.json` (protected) or
 * `latest-unprotected.json`. Exit status: 1 if any attack succeeded, 3 if
 * none did but some could not be judged, else 0.
 */
import type { Command } from 'commander';
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveDatasetsDir } from '../../bench/index.js';
import { EnvironmentError, InvalidInputError } from '../../errors/index.js';
import {
  formatHtml, formatText, latestPath, referenceAgent, runSession, selectAttacks, writeScorecard, ALL_ATTACKS, type ProgressEvent,
} from '../../redteam/index.js';
import { createBackends, findImage } from '../../sandbox/index.js';
import { cliContext } from '../context.js';

interface RedteamOptions {
  profile: string;
  json?: string;
  html?: string;
  only?: string;
  datasets?: string;
  agent?: string;
  list?: boolean;
}

/** Progress on stderr: a rewritten line on a terminal, plain lines otherwise. */
function progressPrinter(): (e: ProgressEvent) => void {
  const live = process.stderr.isTTY === true && !process.env.CI;
  return function printProgress(e) {
    const head = `[${String(e.index + 1).padStart(2)}/${e.total}] ${e.attack.id}`;
    if (!e.report) {
      if (live) process.stderr.write(`\r\x1b[K${head} …`);
      return;
    }
    const line = `${head}: ${e.report.outcome} (${(e.report.durationMs / 1000).toFixed(1)} s)`;
    process.stderr.write(live ? `\r\x1b[K${line}\n` : `${line}\n`);
  };
}

export function registerRedteam(program: Command): void {
  program
    .command('redteam')
    .description('attack a scratch deployment built from this cordon.yaml from inside real sandboxes; score each attack by outcome')
    .option('--profile <profile>', 'protected (a scratch cordon deployment) or unprotected (a deliberately weak setup, to show the attacks are real)', 'protected')
    .option('--json <file>', 'write the scorecard as JSON to FILE')
    .option('--html <file>', 'write a self-contained HTML report to FILE')
    .option('--only <ids>', 'comma-separated attack ids or patterns, e.g. "egress.*,secrets.via-model"')
    .option('--datasets <dir>', 'folder of the third-party injection datasets (default $CORDON_DATASETS, else ../shared/datasets)')
    .option('--agent <name>', 'agent of cordon.yaml whose isolation, egress mode and resources the red-team agent copies (default: the first)')
    .option('--list', 'list the attacks and exit')
    .action(async function redteamCommand(opts: RedteamOptions, cmd: Command) {
      if (opts.list) {
        for (const a of ALL_ATTACKS) process.stdout.write(`${a.id.padEnd(36)} ${a.category.padEnd(10)} ${a.title}\n`);
        return;
      }
      if (opts.profile !== 'protected' && opts.profile !== 'unprotected') {
        throw new InvalidInputError(`--profile ${JSON.stringify(opts.profile)} is not a profile`, { fix: 'use --profile protected or --profile unprotected' });
      }
      const profile = opts.profile;
      const ctx = cliContext(cmd);
      const attacks = selectAttacks(opts.only ? opts.only.split(',').map((s) => s.trim()).filter(Boolean) : []);
      if (attacks.length === 0) throw new InvalidInputError(`--only ${JSON.stringify(opts.only)} matches no attack`, { fix: 'see `cordon redteam --list`' });
      const reference = referenceAgent(ctx.config, opts.agent);
      if (profile === 'protected' && reference.isolation === 'microvm' && !findImage(ctx.home)) {
        throw new EnvironmentError('env-image-missing', `no guest image in ${join(ctx.home, 'images')}`, { fix: 'run `cordon image build` first' });
      }
      let datasetsDir: string | undefined;
      try {
        datasetsDir = resolveDatasetsDir(opts.datasets);
      } catch (err) {
        process.stderr.write(`note: ${err instanceof Error ? err.message : String(err)}; the injection attacks will say "could not judge"\n`);
      }
      const { card, description } = await runSession({
        profile, attacks, operatorConfig: ctx.config, reference, datasetsDir,
        backends: function scratchBackends(scratchHome) {
          // The scratch home shares the operator's image cache (read by the back ends), nothing else.
          const images = join(ctx.home, 'images');
          if (existsSync(images) && !existsSync(join(scratchHome, 'images'))) symlinkSync(images, join(scratchHome, 'images'));
          return createBackends({ home: scratchHome });
        },
        onReady: (d) => process.stderr.write(`red team, ${profile} profile: ${d}\n`),
        onProgress: progressPrinter(),
      });
      mkdirSync(join(ctx.home, 'redteam'), { recursive: true, mode: 0o700 });
      writeScorecard(latestPath(ctx.home, profile), card);
      if (opts.json) writeScorecard(opts.json, card);
      if (opts.html) writeFileSync(opts.html, formatHtml(card, { description }));
      process.stdout.write(formatText(card, { description }));
      process.exitCode = card.summary.succeeded > 0 ? 1 : card.summary.errors > 0 ? 3 : 0;
    });
}
