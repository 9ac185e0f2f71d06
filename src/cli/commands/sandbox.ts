/**
 * `cordon sandbox create|exec|ls|rm`: sandboxes that live longer than one
 * command, on the control plane that `cordon up` runs. Also the helpers that
 * `cordon run` shares: finding that control plane (or starting one in this
 * process), streaming a command's output, and describing isolation tiers.
 */
import type { Command } from 'commander';
import { constants } from 'node:os';
import { startControlPlane } from '../../controlplane/index.js';
import { parseDuration } from '../../config/index.js';
import { CordonError, EnvironmentError, describeError } from '../../errors/index.js';
import type { IsolationTier, SandboxInfo } from '../../sandbox/types.js';
import type { ExecResult } from '../../sandbox/protocol/index.js';
import { CordonClient, findDaemon } from '../../sdk/index.js';
import { cliContext, printJson, type CliContext } from '../context.js';

export interface ControlPlaneHandle {
  client: CordonClient;
  /** True when this process started the control plane and stops it in close(). */
  transient: boolean;
  close(): Promise<void>;
}

/**
 * The control plane for this home: the running daemon's, or (with
 * `startIfNone`) one started in this process on 127.0.0.1 for the duration of
 * the command. A transient control plane destroys its sandboxes when it stops.
 */
export async function openControlPlane(ctx: CliContext, o: { startIfNone: boolean }): Promise<ControlPlaneHandle> {
  const daemon = findDaemon(ctx.home);
  if (daemon?.transient) {
    throw new EnvironmentError('env-home-busy', `another cordon command (pid ${daemon.pid}) is running its own control plane on ${ctx.home}`, {
      fix: 'wait for it to finish, or start `cordon up` so that commands share one control plane',
    });
  }
  if (daemon) return { client: CordonClient.connect({ home: ctx.home, apiUrl: daemon.url }), transient: false, close: async () => undefined };
  if (!o.startIfNone) {
    throw new EnvironmentError('env-no-daemon', `no cordon control plane is running for ${ctx.home}`, {
      fix: 'start it with `cordon up` (in another terminal or as a service), then run this again',
    });
  }
  const cp = await startControlPlane({ home: ctx.home, config: ctx.config, host: '127.0.0.1', port: 0, transient: true });
  return {
    client: new CordonClient({ apiUrl: cp.url, token: cp.operatorToken.token, requestTimeoutMs: 600_000 }),
    transient: true,
    close: () => cp.stop(),
  };
}

/** How strong the isolation of a sandbox is, in plain words. */
export function describeTier(tier: IsolationTier): string {
  switch (tier) {
    case 'microvm-kvm': return 'microVM (KVM)';
    case 'microvm-tcg': return 'microVM (TCG, software emulation)';
    case 'gvisor': return 'gVisor (development tier)';
    case 'bubblewrap': return 'bubblewrap (development tier)';
    default: return String(tier);
  }
}

/** The process exit code for a command result: its own code, 128+signal, or 124 on timeout (as timeout(1)). */
export function exitCodeOf(r: Pick<ExecResult, 'exitCode' | 'signal' | 'timedOut'>): number {
  if (r.timedOut) return 124;
  if (r.exitCode !== null) return r.exitCode;
  const n = r.signal ? (constants.signals as Record<string, number>)[`SIG${r.signal}`] : undefined;
  return n ? 128 + n : 1;
}

/** 127 when the program does not exist in the sandbox, 126 when it cannot run; else undefined. */
export function notStartedCode(err: unknown): number | undefined {
  if (!(err instanceof CordonError) || err.code !== 'sandbox-guest-op') return undefined;
  const guestCode = err.details?.guestCode;
  if (guestCode === 'not-found') return 127;
  if (guestCode === 'permission-denied') return 126;
  return undefined;
}

/** Parse `--timeout` (a duration such as 30s). */
export function timeoutOption(text: string | undefined): number | undefined {
  return text === undefined ? undefined : parseDuration(text);
}

export interface StreamedRun {
  result: ExecResult;
  stdout: Buffer;
  stderr: Buffer;
}

/**
 * Run a command; stream its output to this terminal, or (json) collect it.
 * @param signal aborting stops the command
 */
export async function runStreamed(
  client: CordonClient, id: string, argv: string[], o: { json: boolean; timeoutMs?: number; signal?: AbortSignal },
): Promise<StreamedRun> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const result = await client.exec(id, { argv, ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}) }, {
    onStdout: (b) => (o.json ? out.push(b) : process.stdout.write(b)),
    onStderr: (b) => (o.json ? err.push(b) : process.stderr.write(b)),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  return { result, stdout: Buffer.concat(out), stderr: Buffer.concat(err) };
}

/** One line about how a command ended, for stderr. */
export function exitLine(r: ExecResult, id: string): string {
  const how = r.timedOut ? `timed out after ${fmtMs(r.durationMs)}` : r.exitCode !== null ? `exit code ${r.exitCode}` : `killed by SIG${r.signal}`;
  return `${how} (${fmtMs(r.durationMs)} in ${id}${r.outputTruncated ? '; output truncated' : ''})\n`;
}

export function fmtMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

function age(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

export function registerSandbox(program: Command): void {
  const sandbox = program.command('sandbox').description('create, use, list and remove sandboxes on the running control plane');

  sandbox
    .command('create')
    .description('start a sandbox that lives until `cordon sandbox rm` or its timeout (needs `cordon up`)')
    .option('--agent <name>', 'agent from cordon.yaml', 'default')
    .option('--timeout <duration>', 'lifetime, e.g. 30m (default: the agent\'s resources.timeout)')
    .option('--json', 'print the sandbox as JSON')
    .action(async function sandboxCreate(opts: { agent: string; timeout?: string; json?: boolean }, cmd: Command) {
      const ctx = cliContext(cmd);
      const timeoutMs = timeoutOption(opts.timeout);
      if (!findDaemon(ctx.home)) {
        throw new EnvironmentError('env-no-daemon', `no cordon control plane is running for ${ctx.home}, and a sandbox cannot outlive this command`, {
          fix: 'start `cordon up` (in another terminal or as a service) and run this again; for a single command use `cordon run`',
        });
      }
      const cp = await openControlPlane(ctx, { startIfNone: false });
      const info = await cp.client.createSandbox({ agent: opts.agent, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
      if (opts.json) printJson(info);
      else {
        process.stdout.write(`${info.id}\n`);
        process.stderr.write(`sandbox ${info.id} for agent ${info.agent}: ${describeTier(info.tier)}, ready in ${fmtMs(info.startMs)}, expires ${info.expiresAt}\n`);
      }
    });

  sandbox
    .command('exec')
    .description('run one command in a sandbox, streaming its output; exits with its exit code')
    .argument('<id>', 'sandbox id (see `cordon sandbox ls`)')
    .argument('<command...>', 'the command and its arguments (put `--` before them)')
    .option('--timeout <duration>', 'kill the command after this long, e.g. 30s (default 10m)')
    .option('--json', 'print one JSON document with the result and the output')
    .action(async function sandboxExec(id: string, argv: string[], opts: { timeout?: string; json?: boolean }, cmd: Command) {
      const ctx = cliContext(cmd);
      const timeoutMs = timeoutOption(opts.timeout);
      const cp = await openControlPlane(ctx, { startIfNone: false });
      const abort = new AbortController();
      const onSignal = (): void => abort.abort();
      process.once('SIGINT', onSignal);
      try {
        const r = await runStreamed(cp.client, id, argv, { json: !!opts.json, ...(timeoutMs !== undefined ? { timeoutMs } : {}), signal: abort.signal });
        if (opts.json) {
          printJson({ sandbox: id, ...r.result, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') });
        } else process.stderr.write(exitLine(r.result, id));
        process.exitCode = exitCodeOf(r.result);
      } catch (err) {
        if (abort.signal.aborted) {
          process.stderr.write('interrupted; the command was stopped\n');
          process.exitCode = 130;
          return;
        }
        const shellCode = notStartedCode(err);
        if (shellCode === undefined) throw err;
        if (opts.json) printJson((err as CordonError).toJSON());
        process.stderr.write(`cordon: ${argv[0]}: ${describeError(err)}\n`);
        process.exitCode = shellCode;
      } finally {
        process.off('SIGINT', onSignal);
      }
    });

  sandbox
    .command('ls')
    .description('list sandboxes: state, isolation tier, age, agent')
    .option('--json', 'print JSON')
    .action(async function sandboxLs(opts: { json?: boolean }, cmd: Command) {
      const ctx = cliContext(cmd);
      const daemon = findDaemon(ctx.home);
      const list = daemon && !daemon.transient ? await (await openControlPlane(ctx, { startIfNone: false })).client.listSandboxes() : [];
      if (opts.json) {
        printJson({ controlPlane: daemon ? { url: daemon.url, pid: daemon.pid } : null, sandboxes: list });
        return;
      }
      if (!daemon) {
        process.stdout.write(`no control plane is running for ${ctx.home}, so there are no sandboxes (start one with \`cordon up\`)\n`);
        return;
      }
      if (list.length === 0) {
        process.stdout.write('no sandboxes\n');
        return;
      }
      const rows = [['ID', 'AGENT', 'STATE', 'ISOLATION', 'AGE', 'EXPIRES']];
      for (const s of list) rows.push([s.id, s.agent, s.state, describeTier(s.tier), age(s.createdAt), s.expiresAt]);
      process.stdout.write(table(rows));
    });

  sandbox
    .command('rm')
    .description('destroy sandboxes')
    .argument('<ids...>', 'sandbox ids')
    .option('--json', 'print JSON')
    .action(async function sandboxRm(ids: string[], opts: { json?: boolean }, cmd: Command) {
      const ctx = cliContext(cmd);
      const cp = await openControlPlane(ctx, { startIfNone: false });
      const removed: string[] = [];
      const failed: Array<{ id: string; error: Record<string, unknown> }> = [];
      for (const id of ids) {
        try {
          await cp.client.destroySandbox(id);
          removed.push(id);
          if (!opts.json) process.stdout.write(`${id} destroyed\n`);
        } catch (err) {
          failed.push({ id, error: err instanceof CordonError ? err.toJSON() : { error: 'internal', message: String(err) } });
          if (!opts.json) process.stderr.write(`cordon: ${id}: ${describeError(err)}\n`);
        }
      }
      if (opts.json) printJson({ removed, failed });
      if (failed.length > 0) process.exitCode = 1;
    });
}
