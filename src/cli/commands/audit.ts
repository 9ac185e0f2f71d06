/**
 * `cordon audit verify|tail|export`: read the audit log straight from the store
 * (the control plane may be running; SQLite in WAL mode allows readers).
 * `cordon audit rotate-key` writes: it takes the home lock, so it is refused
 * while `cordon up` runs on the same home (and a `cordon up` started during a
 * rotation is refused, naming the rotation's pid as a running control plane).
 */
import type { Command } from 'commander';
import { createWriteStream, existsSync } from 'node:fs';
import { once } from 'node:events';
import { userInfo } from 'node:os';
import { verifyAudit, exportJsonl, loadKeyToRotate, queryEvents, rotateAuditKey, type AuditEvent } from '../../audit/index.js';
import { acquireHomeLock, keyDir, openConfiguredStore, storePath } from '../../controlplane/index.js';
import { EnvironmentError, InvalidInputError, StoreError } from '../../errors/index.js';
import type { Store } from '../../store/index.js';
import { sleep } from '../../util/index.js';
import { cliContext, printJson, type CliContext } from '../context.js';

async function withStore<T>(ctx: CliContext, fn: (store: Store) => Promise<T>): Promise<T> {
  if (ctx.config.store.kind === 'sqlite' && !existsSync(storePath(ctx.home))) {
    throw new StoreError('store-missing', `there is no audit log yet: ${storePath(ctx.home)} does not exist`, {
      fix: 'start the control plane once with `cordon up`, or point --home / CORDON_HOME at the right directory',
    });
  }
  const store = await openConfiguredStore(ctx.home, ctx.config);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

function formatEvent(e: AuditEvent): string {
  const who = [e.agent && `agent=${e.agent}`, e.sandbox && `sandbox=${e.sandbox}`].filter(Boolean).join(' ');
  const dec = e.decision ? ` ${e.decision}${e.reason ? `(${e.reason})` : ''}` : '';
  return `${String(e.seq).padStart(8)} ${e.ts} ${e.type} actor=${e.actor}${who ? ' ' + who : ''}${dec} ${JSON.stringify(e.data)}`;
}

/** The home lock, or a refusal that says to stop `cordon up` first. */
function lockHomeForRotation(home: string): { release(): void } {
  try {
    return acquireHomeLock(home);
  } catch (err) {
    if (err instanceof EnvironmentError && err.code === 'env-already-running') {
      const pid = /\(pid (\d+)\)/.exec(err.message)?.[1];
      throw new EnvironmentError('env-already-running', `cannot rotate the audit key while the control plane runs: ${err.message}`, {
        fix: `stop \`cordon up\`${pid ? ` (pid ${pid})` : ''} first, run \`cordon audit rotate-key\` again, then start \`cordon up\``,
        cause: err,
      });
    }
    throw err;
  }
}

/** `operator:local:<user>`, as other commands record the local operator. */
function localOperator(): string {
  try {
    return `operator:local:${userInfo().username}`;
  } catch {
    return `operator:local:uid-${process.getuid?.() ?? 'unknown'}`; // no passwd entry for this uid
  }
}

function positiveInt(s: string, name: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new InvalidInputError(`${name} ${JSON.stringify(s)} is not a positive whole number`, { fix: `pass ${name} 20` });
  return n;
}

export function registerAudit(program: Command): void {
  const audit = program.command('audit').description('verify, follow and export the audit log, and rotate its signing key');

  audit
    .command('verify')
    .description('check the hash chain and the signed checkpoints')
    .option('--json', 'print JSON')
    .action(async function auditVerify(opts: { json?: boolean }, cmd: Command) {
      const ctx = cliContext(cmd);
      const report = await withStore(ctx, (store) => verifyAudit(store, { keyDir: keyDir(ctx.home) }));
      if (opts.json) printJson(report);
      else if (report.ok) {
        process.stdout.write(`audit log ok: ${report.events} events, ${report.checkpoints} checkpoints, last seq ${report.lastSeq}\n`);
        if (report.unsealedEvents) process.stdout.write(`  note: ${report.unsealedEvents} event(s) after the last checkpoint are not yet sealed\n`);
      } else {
        process.stdout.write(`audit log FAILED verification at seq ${report.firstBadSeq}: ${report.problem}\n  ${report.message}\n`);
      }
      if (!report.ok) process.exitCode = 1;
    });

  audit
    .command('tail')
    .description('print the latest events (and follow new ones with -f)')
    .option('-n, --lines <n>', 'how many events', '20')
    .option('-f, --follow', 'keep printing new events')
    .option('--type <type>', 'only events of this type')
    .option('--agent <agent>', 'only events of this agent')
    .option('--sandbox <id>', 'only events of this sandbox')
    .option('--json', 'print one JSON document (not with --follow)')
    .action(async function auditTail(opts: { lines: string; follow?: boolean; type?: string; agent?: string; sandbox?: string; json?: boolean }, cmd: Command) {
      const ctx = cliContext(cmd);
      const n = positiveInt(opts.lines, '--lines');
      if (opts.json && opts.follow) throw new InvalidInputError('--json and --follow cannot be combined', { fix: 'drop one of them' });
      const filter = { ...(opts.type ? { type: opts.type } : {}), ...(opts.agent ? { agent: opts.agent } : {}), ...(opts.sandbox ? { sandbox: opts.sandbox } : {}) };
      await withStore(ctx, async (store) => {
        const latest = (await queryEvents(store, { ...filter, limit: n, order: 'desc' })).reverse();
        if (opts.json) return printJson({ events: latest });
        for (const e of latest) process.stdout.write(formatEvent(e) + '\n');
        if (!opts.follow) return;
        let after = latest.at(-1)?.seq ?? (await store.audit.head())?.seq ?? 0;
        let stop = false;
        const onSig = () => { stop = true; };
        process.once('SIGINT', onSig);
        process.once('SIGTERM', onSig);
        while (!stop) {
          const next = await queryEvents(store, { ...filter, afterSeq: after, limit: 500, order: 'asc' });
          for (const e of next) process.stdout.write(formatEvent(e) + '\n');
          if (next.length > 0) after = next[next.length - 1]!.seq;
          else await sleep(500);
        }
      });
    });

  audit
    .command('export')
    .description('write every event, in order, as JSON lines')
    .requiredOption('--format <format>', 'export format (jsonl)')
    .option('-o, --out <file>', 'write to this file instead of stdout')
    .action(async function auditExport(opts: { format: string; out?: string }, cmd: Command) {
      if (opts.format !== 'jsonl') throw new InvalidInputError(`unknown export format ${JSON.stringify(opts.format)}`, { fix: 'use --format jsonl' });
      const ctx = cliContext(cmd);
      await withStore(ctx, async (store) => {
        const out = opts.out ? createWriteStream(opts.out, { flags: 'wx', mode: 0o600 }) : process.stdout;
        if (opts.out) await once(out, 'open');
        const count = await exportJsonl(store, out);
        if (opts.out) {
          await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
          process.stderr.write(`exported ${count} events to ${opts.out}\n`);
        }
      });
    });

  audit
    .command('rotate-key')
    .description('seal the log with the current checkpoint key, replace the key, and record the rotation (keeps the old public key; stop `cordon up` first)')
    .option('--json', 'print JSON')
    .action(async function auditRotateKey(opts: { json?: boolean }, cmd: Command) {
      const ctx = cliContext(cmd);
      const dir = keyDir(ctx.home);
      if (!existsSync(ctx.home)) loadKeyToRotate(dir); // throws key-missing: there is no home to lock
      const lock = lockHomeForRotation(ctx.home);
      try {
        loadKeyToRotate(dir); // refuse a missing or unusable key before opening the store
        const r = await withStore(ctx, (store) => rotateAuditKey({ store, keyDir: dir, actor: localOperator() }));
        if (opts.json) return printJson(r);
        process.stdout.write(
          `audit key rotated: ${r.oldKeyId} -> ${r.newKeyId}\n` +
            `  events up to seq ${r.sealedSeq} are sealed by the old key; the rotation is event seq ${r.eventSeq}\n` +
            `  retired public key: ${r.retiredPublicKeyPath} (keep it: checkpoints of key ${r.oldKeyId} verify only with it)\n` +
            `  new public key:     ${r.publicKeyPath}\n`,
        );
      } finally {
        lock.release();
      }
    });
}
