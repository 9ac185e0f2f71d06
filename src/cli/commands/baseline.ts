/**
 * `cordon baseline show AGENT`: an agent's learned behaviour (state of the
 * learning window, rate profiles, the most frequent values of each feature),
 * read straight from the store of `$CORDON_HOME`, not through the API.
 */
import type { Command } from 'commander';
import { summariseBaseline } from '../../detect/index.js';
import { NotFoundError } from '../../errors/index.js';
import { printJson } from '../context.js';
import { withDetectStore } from './alerts.js';

function formatSummary(s: Record<string, any>): string {
  const lines = [
    `agent ${s.agent}: ${s.state}${s.learnedAt ? ` at ${s.learnedAt}` : ''}, ${s.events} events in ${s.sessions} sessions (${s.firstTs ?? '?'} → ${s.lastTs ?? '?'})`,
  ];
  for (const [f, p] of Object.entries(s.profile as Record<string, { median: number; mad: number; minutes: number }>)) {
    const scale = f === 'requests' ? '' : ' (log1p scale)';
    lines.push(`  ${f} per active minute: median ${p.median.toFixed(2)}, MAD ${p.mad.toFixed(2)}${scale}, over ${p.minutes} minutes`);
  }
  for (const [f, c] of Object.entries(s.categories as Record<string, { distinct: number; top: Record<string, number> }>)) {
    if (c.distinct === 0) continue;
    lines.push(`  ${f} (${c.distinct} distinct): ${Object.entries(c.top).map(([v, n]) => `${v} ×${n}`).join(', ')}`);
  }
  return lines.join('\n') + '\n';
}

export function registerBaseline(program: Command): void {
  const baseline = program.command('baseline').description('per-agent behaviour baselines of the detector');
  baseline
    .command('show <agent>')
    .description("show an agent's baseline")
    .option('--top <n>', 'values shown per feature', '10')
    .option('--json', 'print JSON')
    .action(async function baselineShow(agent: string, opts: { top: string; json?: boolean }, cmd: Command) {
      const top = Math.max(1, Math.min(1000, Number.parseInt(opts.top, 10) || 10));
      const b = await withDetectStore(cmd, (repo) => repo.loadBaseline(agent));
      if (!b) {
        throw new NotFoundError(`agent ${JSON.stringify(agent)} has no baseline yet`, {
          fix: 'a baseline is saved once the control plane has seen events of this agent; check the name with `cordon audit tail --agent NAME`',
        });
      }
      const summary = summariseBaseline(b, top);
      if (opts.json) printJson({ baseline: summary });
      else process.stdout.write(formatSummary(summary));
    });
}
