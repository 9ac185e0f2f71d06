/**
 * `cordon tunnel open|ls|close`: temporary tunnels into a sandbox on the
 * running control plane (`cordon up`), through its API with the operator
 * token from `$CORDON_HOME`.
 *
 * `open SANDBOX PORT --ttl 10m` prints the tunnel's URL with its one-time
 * token, once: open it in a browser (the token becomes a session cookie), or
 * send `Authorization: Bearer TOKEN` on the first request. cordon keeps only
 * the token's hash, so it cannot be shown again. With `--tcp` the tunnel
 * carries raw bytes (ssh, databases): `cordon tunnel connect ADDR` sends the
 * token as the first line and bridges stdin/stdout to it (one connection).
 */
import type { Command } from 'commander';
import { connect } from 'node:net';
import { parseDuration } from '../../config/index.js';
import { EnvironmentError, InvalidInputError } from '../../errors/index.js';
import type { OpenedTunnel, TunnelInfo } from '../../ingress/index.js';
import { cliHome, operatorCall as call, printJson } from '../context.js';


function inTime(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((Date.parse(iso) - now) / 1000));
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${s % 60 ? `${s % 60}s` : ''}` : `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

/** Parse the PORT argument: an integer in 1..65535. */
export function parsePort(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isInteger(n) || n < 1 || n > 65535) {
    throw new InvalidInputError(`"${text}" is not a TCP port`, { fix: 'give the guest port as a number in 1..65535, e.g. 8000' });
  }
  return n;
}

export function registerTunnel(program: Command): void {
  const tunnel = program.command('tunnel').description('temporary, token-guarded tunnels into a sandbox port (needs `cordon up`)');

  tunnel
    .command('open')
    .description('open a tunnel to a port on the sandbox\'s loopback; prints the URL and its one-time token once')
    .argument('<sandbox>', 'sandbox id (see `cordon sandbox ls`)')
    .argument('<port>', 'guest TCP port, e.g. 8000')
    .option('--ttl <duration>', 'close the tunnel after this long', '10m')
    .option('--idle <duration>', 'close it after this long without traffic (default 5m, at most the TTL)')
    .option('--bind <address>', 'listen on this IP address instead of 127.0.0.1 (exposes the tunnel to that network)')
    .option('--tcp', 'raw TCP instead of HTTP: the client\'s first line is the token (see `cordon tunnel connect`); one connection')
    .option('--json', 'print JSON (includes the token)')
    .action(async function tunnelOpen(sandbox: string, portText: string, opts: { ttl: string; idle?: string; bind?: string; tcp?: boolean; json?: boolean }, cmd: Command) {
      const body = {
        ...(opts.tcp ? { mode: 'tcp' } : {}),
        port: parsePort(portText),
        ttlMs: parseDuration(opts.ttl),
        ...(opts.idle !== undefined ? { idleMs: parseDuration(opts.idle) } : {}),
        ...(opts.bind !== undefined ? { bind: opts.bind } : {}),
      };
      const { tunnel: t } = await call<{ tunnel: OpenedTunnel }>(cliHome(cmd), 'POST', `/v1/sandboxes/${encodeURIComponent(sandbox)}/tunnels`, body);
      if (opts.json) return printJson({ tunnel: t });
      if (t.mode === 'tcp') {
        process.stdout.write([
          `tunnel   ${t.id} → ${t.sandboxId} port ${t.port} (raw TCP)${t.exposed ? `  (listening on ${t.bind}: reachable from that network)` : ''}`,
          `address  ${t.url.slice('tcp://'.length)}`,
          `token    ${t.token}`,
          `closes   in ${inTime(t.expiresAt)} (TTL), or after ${Math.round(t.idleMs / 1000)}s idle, or when the sandbox ends`,
          '',
          'The token admits one connection and is not shown again; the client sends it as its first line, e.g.',
          `CORDON_TUNNEL_TOKEN=${t.token} cordon tunnel connect ${t.url.slice('tcp://'.length)}`,
          '',
        ].join('\n'));
        return;
      }
      process.stdout.write([
        `tunnel   ${t.id} → ${t.sandboxId} port ${t.port}${t.exposed ? `  (listening on ${t.bind}: reachable from that network)` : ''}`,
        `url      ${t.urlWithToken}`,
        `token    ${t.token}`,
        `closes   in ${inTime(t.expiresAt)} (TTL), or after ${Math.round(t.idleMs / 1000)}s idle, or when the sandbox ends`,
        '',
        'The token works once and is not shown again: open the URL in a browser (it becomes a session cookie),',
        `or send \`Authorization: Bearer <token>\` on the first request, e.g. curl -c jar -b jar -H 'Authorization: Bearer ${t.token}' ${t.url}`,
        '',
      ].join('\n'));
    });

  tunnel
    .command('connect')
    .description('bridge stdin/stdout to a TCP-mode tunnel (e.g. as an ssh ProxyCommand); the token comes from $CORDON_TUNNEL_TOKEN or --token')
    .argument('<address>', 'HOST:PORT (or tcp://HOST:PORT) that `cordon tunnel open --tcp` printed')
    .option('--token <token>', 'the one-time token (visible to other local users in the process list: prefer $CORDON_TUNNEL_TOKEN)')
    .action(async function tunnelConnect(address: string, opts: { token?: string }) {
      const token = opts.token ?? process.env.CORDON_TUNNEL_TOKEN;
      if (!token) throw new InvalidInputError('no token', { fix: 'set CORDON_TUNNEL_TOKEN to the token `cordon tunnel open --tcp` printed' });
      const m = /^(?:tcp:\/\/)?(\[[^\]]+\]|[^:]+):(\d+)$/.exec(address);
      if (!m) throw new InvalidInputError(`"${address}" is not HOST:PORT`, { fix: 'pass the address `cordon tunnel open --tcp` printed, e.g. 127.0.0.1:40123' });
      const socket = connect(parsePort(m[2]!), m[1]!.replace(/^\[|\]$/g, ''));
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('error', (err) => reject(new EnvironmentError('env-tunnel-unreachable', `cannot reach the tunnel at ${address}: ${err.message}`, {
          fix: 'check the address and that the tunnel is still open (`cordon tunnel ls`)',
        })));
      });
      socket.write(token + '\n');
      process.stdin.pipe(socket);
      socket.pipe(process.stdout);
      await new Promise<void>((resolve) => socket.once('close', () => resolve()));
      process.stdin.unpipe(socket);
      process.stdin.destroy();
    });

  tunnel
    .command('ls')
    .description('list open tunnels')
    .option('--json', 'print JSON')
    .action(async function tunnelLs(opts: { json?: boolean }, cmd: Command) {
      const { tunnels } = await call<{ tunnels: TunnelInfo[] }>(cliHome(cmd), 'GET', '/v1/tunnels');
      if (opts.json) return printJson({ tunnels });
      if (tunnels.length === 0) {
        process.stderr.write('no open tunnels\n');
        return;
      }
      const rows = [['ID', 'SANDBOX', 'PORT', 'URL', 'CLOSES IN', 'TOKEN', 'CONNS', 'REFUSED']];
      for (const t of tunnels) {
        rows.push([t.id, t.sandboxId, String(t.port), t.url, inTime(t.expiresAt), t.tokenUsed ? 'used' : 'unused', `${t.activeConnections}/${t.connections}`, String(t.refused)]);
      }
      process.stdout.write(table(rows));
    });

  tunnel
    .command('close')
    .description('close a tunnel now (its connections end)')
    .argument('<id>', 'tunnel id (see `cordon tunnel ls`)')
    .option('--json', 'print JSON')
    .action(async function tunnelClose(id: string, opts: { json?: boolean }, cmd: Command) {
      const r = await call<{ closed: string }>(cliHome(cmd), 'DELETE', `/v1/tunnels/${encodeURIComponent(id)}`);
      if (opts.json) return printJson(r);
      process.stdout.write(`closed ${r.closed}\n`);
    });
}
