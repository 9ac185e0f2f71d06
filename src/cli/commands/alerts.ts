/**
 * `cordon alerts ls|ack`: the detector's alerts, read and acknowledged
 * straight in the store of `$CORDON_HOME` (like `cordon audit`: SQLite in WAL
 * mode allows this while the control plane runs), not through the API.
 * An acknowledgement records the local user as `operator:local:<user>`.
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import { openConfiguredStore, storePath } from '../../controlplane/index.js';
import { openDetectStore, type DetectStore, type StoredAlert } from '../../detect/index.js';
import { InvalidInputError, StoreError } from '../../errors/index.js';
import { cliContext, printJson } from '../context.js';

/** Open the configured store and this layer's tables for one command. */
export async function withDetectStore<T>(cmd: Command, fn: (repo: DetectStore) => Promise<T>): Promise<T> {
  const ctx = cliContext(cmd);
  if (ctx.config.store.kind === 'sqlite' && !existsSync(storePath(ctx.home))) {
    throw new StoreError('store-missing', `there is no store yet: ${storePath(ctx.home)} does not exist`, {
      fix: 'start the control plane once with `cordon up`, or point --home / CORDON_HOME at the right directory',
    });
  }
  const store = await openConfiguredStore(ctx.home, ctx.config);
  try {
    return await fn(await openDetectStore(store));
  } finally {
    await store.close();
  }
}

function formatAlert(a: StoredAlert): string {
  const where = [`agent=${a.agent}`, a.sandbox && `sandbox=${a.sandbox}`].filter(Boolean).join(' ');
  const ack = a.ackedAt ? ` acked by ${a.ackedBy ?? '?'} at ${a.ackedAt}` : '';
  return `${a.id}  ${a.ts}  ${a.kind}/${a.feature}=${JSON.stringify(a.value)}  score ${a.score}  action ${a.action}  ${where}${ack}`;
}

export function registerAlerts(program: Command): void {
  const alerts = program.command('alerts').description('anomaly alerts raised by the behaviour detector');

  alerts
    .command('ls')
    .description('list alerts, newest first (unacknowledged only unless --all)')
    .option('--all', 'include acknowledged alerts')
    .option('--agent <agent>', 'only alerts of this agent')
    .option('-n, --limit <n>', 'how many', '50')
    .option('--json', 'print JSON')
    .action(async function alertsLs(opts: { all?: boolean; agent?: string; limit: string; json?: boolean }, cmd: Command) {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new InvalidInputError(`--limit ${JSON.stringify(opts.limit)} is out of range`, { fix: 'use a whole number from 1 to 10000' });
      const list = await withDetectStore(cmd, (repo) => repo.listAlerts({ limit, ...(opts.all ? {} : { acked: false }), ...(opts.agent ? { agent: opts.agent } : {}) }));
      if (opts.json) return printJson({ alerts: list });
      if (list.length === 0) process.stdout.write(opts.all ? 'no alerts\n' : 'no unacknowledged alerts\n');
      for (const a of list) process.stdout.write(formatAlert(a) + '\n');
    });

  alerts
    .command('ack <id>')
    .description('acknowledge an alert (it no longer shows in `cordon alerts ls`)')
    .option('--json', 'print JSON')
    .action(async function alertsAck(id: string, opts: { json?: boolean }, cmd: Command) {
      const by = `operator:local:${userInfo().username}`;
      const a = await withDetectStore(cmd, (repo) => repo.ack(id, by));
      if (opts.json) printJson({ alert: a });
      else process.stdout.write(`acknowledged ${a.id} (${a.kind}/${a.feature}) by ${a.ackedBy}\n`);
    });
}
