/**
 * `cordon approvals ls|show|approve|deny`: actions held for a human decision
 * on the running control plane (`cordon up`), through its API with the
 * operator token from `$CORDON_HOME`. `show` prints the exact action: method,
 * URL, headers (secrets masked), body excerpt or tool arguments, agent and
 * sandbox.
 */
import type { Command } from 'commander';
import type { Approval, SupervisedMark } from '../../approvals/index.js';
import { InvalidInputError } from '../../errors/index.js';
import { cliHome, operatorCall as call, printJson } from '../context.js';

const STATES = ['pending', 'approved', 'denied', 'expired'] as const;

function age(iso: string, now = Date.now()): string {
  const diffMs = Date.parse(iso) - now;
  const a = Math.round(Math.abs(diffMs) / 1000);
  const text = a < 60 ? `${a}s` : a < 3600 ? `${Math.floor(a / 60)}m` : `${Math.floor(a / 3600)}h`;
  // The sign of the exact difference: a moment 0.3 s ago is "0s ago", not "in 0s".
  return diffMs > 0 ? `in ${text}` : `${text} ago`;
}

function what(a: Approval): string {
  return a.action.kind === 'egress' ? `${a.action.method} ${a.action.url}` : `tool ${a.action.toolName}`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

/** The exact action, for a terminal. */
export function describeApproval(a: Approval): string {
  const lines = [
    `approval  ${a.id}`,
    `state     ${a.state}${a.consumedAt ? ' (used)' : ''}${a.reason ? ` (${a.reason})` : ''}`,
    `agent     ${a.action.agent}`,
    `sandbox   ${a.action.sandboxId}`,
    `created   ${a.createdAt}`,
    `expires   ${a.expiresAt} (${age(a.expiresAt)})`,
  ];
  if (a.decidedBy) lines.push(`decided   by ${a.decidedBy} at ${a.decidedAt}`);
  if (a.approvers.length > 0) lines.push(`approvers ${a.approvers.join(', ')}`);
  if (a.action.kind === 'egress') {
    lines.push(`request   ${a.action.method} ${a.action.url}`);
    for (const [name, value] of Object.entries(a.action.headers ?? {})) lines.push(`  ${name}: ${value}`);
    lines.push(`body      ${a.action.bodyBytes ?? 0} bytes, sha256 ${a.action.bodySha256}`);
    if (a.action.bodyExcerpt) lines.push(a.action.bodyExcerpt.split('\n').map((l) => `  | ${l}`).join('\n'));
  } else {
    lines.push(`tool      ${a.action.toolName}`, `arguments ${JSON.stringify(a.action.args, null, 2).split('\n').join('\n          ')}`);
  }
  lines.push(`hash      ${a.actionHash}`);
  return lines.join('\n') + '\n';
}

export function registerApprovals(program: Command): void {
  const approvals = program.command('approvals').description('see and decide actions held for a human approval (needs `cordon up`)');

  approvals
    .command('ls')
    .description('list approvals: pending ones by default')
    .option('--state <state>', `only this state: ${STATES.join(', ')} (default: pending)`)
    .option('--all', 'every state')
    .option('--json', 'print JSON')
    .action(async function approvalsLs(opts: { state?: string; all?: boolean; json?: boolean }, cmd: Command) {
      const state = opts.all ? undefined : opts.state ?? 'pending';
      if (state !== undefined && !(STATES as readonly string[]).includes(state)) {
        throw new InvalidInputError(`unknown state ${JSON.stringify(state)}`, { fix: `use one of ${STATES.join(', ')}, or --all` });
      }
      const { approvals: list } = await call<{ approvals: Approval[] }>(cliHome(cmd), 'GET', `/v1/approvals${state ? `?state=${state}` : ''}`);
      if (opts.json) return printJson({ approvals: list });
      if (list.length === 0) {
        process.stderr.write(`no ${state ? `${state} ` : ''}approvals\n`);
        return;
      }
      const rows = [['ID', 'STATE', 'AGENT', 'SANDBOX', 'EXPIRES', 'ACTION']];
      for (const a of list) rows.push([a.id, a.consumedAt ? 'used' : a.state, a.action.agent, a.action.sandboxId, age(a.expiresAt), what(a).slice(0, 120)]);
      process.stdout.write(table(rows));
    });

  approvals
    .command('show')
    .description('show the exact action of one approval')
    .argument('<id>', 'approval id (see `cordon approvals ls`)')
    .option('--json', 'print JSON')
    .action(async function approvalsShow(id: string, opts: { json?: boolean }, cmd: Command) {
      const a = await call<Approval>(cliHome(cmd), 'GET', `/v1/approvals/${encodeURIComponent(id)}`);
      if (opts.json) printJson(a);
      else process.stdout.write(describeApproval(a));
    });

  for (const verdict of ['approve', 'deny'] as const) {
    approvals
      .command(verdict)
      .description(verdict === 'approve' ? 'permit exactly one execution of exactly this action' : 'refuse the action')
      .argument('<id>', 'approval id (see `cordon approvals ls`)')
      .option('--reason <text>', 'why, for the audit log')
      .option('--json', 'print the decided approval as JSON')
      .action(async function approvalsDecide(id: string, opts: { reason?: string; json?: boolean }, cmd: Command) {
        const a = await call<Approval>(cliHome(cmd), 'POST', `/v1/approvals/${encodeURIComponent(id)}/${verdict}`, opts.reason !== undefined ? { reason: opts.reason } : {});
        if (opts.json) return printJson(a);
        const note = a.state === 'pending' ? ` (${a.approvers.length} of 2 approvals; another operator must approve too)` : '';
        process.stdout.write(`${a.id} ${a.state}${note}: ${what(a)}\n`);
      });
  }

  approvals
    .command('supervised')
    .description('list sandboxes under supervision (an alert with action approve): every action their policy allows waits for an approval')
    .option('--json', 'print JSON')
    .action(async function approvalsSupervised(opts: { json?: boolean }, cmd: Command) {
      const r = await call<{ supervised: SupervisedMark[] }>(cliHome(cmd), 'GET', '/v1/approvals/supervised');
      if (opts.json) return printJson(r);
      if (r.supervised.length === 0) return void process.stdout.write('no sandbox is under supervision\n');
      process.stdout.write(table([['SANDBOX', 'AGENT', 'SINCE', 'ALERT', 'REASON'], ...r.supervised.map((m) => [m.sandboxId, m.agent, age(m.since), m.alertId, m.reason])]));
    });

  approvals
    .command('lift')
    .description('lift the supervision of a sandbox: its allowed actions flow again without approvals')
    .argument('<sandbox>', 'sandbox id (see `cordon approvals supervised`)')
    .option('--reason <text>', 'why, for the audit log')
    .option('--json', 'print the answer as JSON')
    .action(async function approvalsLift(sandbox: string, opts: { reason?: string; json?: boolean }, cmd: Command) {
      const r = await call<unknown>(cliHome(cmd), 'POST', `/v1/approvals/supervised/${encodeURIComponent(sandbox)}/lift`, opts.reason !== undefined ? { reason: opts.reason } : {});
      if (opts.json) return printJson(r);
      process.stdout.write(`${sandbox}: supervision lifted\n`);
    });
}
