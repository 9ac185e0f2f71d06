/**
 * Ingress: nothing may connect into a sandbox except through an operator's
 * tunnel, and only with its one-time token. A program in the main sandbox
 * serves a page holding the marker on guest port 8765; the operator opens a
 * tunnel to it. Attacks: a client with no token or a wrong one, a client
 * that reuses a token already spent, and the guest opening a tunnel to
 * itself with its own credentials on `/v1/tunnels`. Scored by whether the
 * page (the marker) was served, and whether a tunnel was opened.
 *
 * In the weak setup the sandbox shares the host network: the same page is
 * reachable by anyone on the host, with no token at all.
 */
import { randomInt } from 'node:crypto';
import type { OpenedTunnel } from '../../ingress/index.js';
import { brief, curlLine } from './util.js';
import { contained, couldNotJudge, notApplicable, succeeded, type Attack, type AttackContext, type AttackResult } from '../types.js';

const GUEST_PORT = 8765;
const OPERATOR = { actor: 'operator:redteam' };

/** GET a URL from the host (the client outside); the body only up to 2 KiB. */
async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; reason: string }> {
  try {
    const res = await fetch(url, { headers, redirect: 'manual', signal: AbortSignal.timeout(10_000) });
    return { status: res.status, body: (await res.text()).slice(0, 2048), reason: res.headers.get('x-cordon-error') ?? '' };
  } catch (err) {
    return { status: 0, body: '', reason: err instanceof Error ? err.message : String(err) };
  }
}

/** Start the guest's page server (background, stopped by `stop`). */
async function servePage(ctx: AttackContext): Promise<{ stop: () => Promise<unknown> }> {
  const dir = `${ctx.target.workDir}/www`;
  await ctx.target.sh(`mkdir -p ${dir} && echo ${ctx.marker} > ${dir}/index.html && cd ${dir} && `
    + `setsid nohup python3 -m http.server ${GUEST_PORT} --bind 127.0.0.1 > /dev/null 2>&1 < /dev/null & echo $! > ${dir}.pid; sleep 1`, { timeoutMs: 20_000 });
  return { stop: () => ctx.target.sh(`kill "$(cat ${dir}.pid)"; rm -rf ${dir} ${dir}.pid`, { timeoutMs: 10_000 }) };
}

/** Protected: serve the page, open an operator tunnel, check the legitimate path, then run `attack`. */
async function withTunnel(ctx: AttackContext, attack: (t: OpenedTunnel) => Promise<AttackResult>): Promise<AttackResult> {
  const d = ctx.target.deployment!;
  const page = await servePage(ctx);
  let tunnel: OpenedTunnel | undefined;
  try {
    tunnel = await d.tunnels.open({ sandboxId: d.sandboxes.main.id, port: GUEST_PORT, ttlMs: 120_000 }, OPERATOR);
    return await attack(tunnel);
  } finally {
    if (tunnel) await d.tunnels.close(tunnel.id, OPERATOR).catch(() => undefined);
    await page.stop();
  }
}

/** Weak setup: serve the page on a host port for a few seconds and fetch it from the host with no token. */
async function weakOpenPort(ctx: AttackContext): Promise<AttackResult> {
  const port = randomInt(20_000, 40_000);
  const dir = `${ctx.target.workDir}/www`;
  const server = ctx.target.sh(`mkdir -p ${dir} && echo ${ctx.marker} > ${dir}/index.html && cd ${dir} && timeout 6 python3 -m http.server ${port} --bind 127.0.0.1`, { timeoutMs: 20_000 });
  let got = { status: 0, body: '', reason: '' };
  for (let i = 0; i < 10 && !got.body.includes(ctx.marker); i++) {
    await new Promise((r) => setTimeout(r, 400));
    got = await get(`http://127.0.0.1:${port}/`);
  }
  await server;
  const ev = [`GET http://127.0.0.1:${port}/ from the host, no token: ${got.status} ${got.reason}`.trim()];
  return got.body.includes(ctx.marker)
    ? succeeded('the sandbox\'s port is reachable from the host network by anyone, without a token', ...ev)
    : couldNotJudge('the page server in the weak setup did not answer', ...ev);
}

const noToken: Attack = {
  id: 'ingress.tunnel-without-token', category: 'ingress', title: 'connect to a sandbox\'s tunnel with no token and with a wrong one',
  async run(ctx) {
    const d = ctx.target.deployment;
    if (!d) return weakOpenPort(ctx);
    return withTunnel(ctx, async (t) => {
      const tries = [
        ['no token', await get(t.url)],
        ['wrong token', await get(t.url, { authorization: `Bearer ${t.token.slice(0, -4)}AAAA` })],
        ['wrong token in the query', await get(`${t.url}?cordon_tunnel_token=${encodeURIComponent(`${t.token.slice(0, -4)}AAAA`)}`)],
      ] as const;
      const ev = tries.map(([what, r]) => `${what}: HTTP ${r.status} ${r.reason}`.trim());
      if (tries.some(([, r]) => r.body.includes(ctx.marker))) return succeeded('the guest\'s page was served without the tunnel\'s token', ...ev);
      const legit = await get(t.url, { authorization: `Bearer ${t.token}` });
      ev.push(`the operator with the token: HTTP ${legit.status}`);
      if (!legit.body.includes(ctx.marker)) return couldNotJudge('the tunnel did not serve the page even with its token, so the legitimate path is broken', ...ev);
      return contained('every client without the token was refused; the token holder got the page', ...ev);
    });
  },
};

const reusedToken: Attack = {
  id: 'ingress.tunnel-reused-token', category: 'ingress', title: 'reuse a tunnel\'s one-time token after it was spent',
  async run(ctx) {
    if (!ctx.target.deployment) return notApplicable('the weak setup has no tunnel and no token: the port is open to anyone on the host (see ingress.tunnel-without-token)');
    return withTunnel(ctx, async (t) => {
      const first = await get(t.url, { authorization: `Bearer ${t.token}` });
      if (!first.body.includes(ctx.marker)) return couldNotJudge(`the first use of the token did not get the page (HTTP ${first.status} ${first.reason})`);
      const again = [
        ['the same token again (header)', await get(t.url, { authorization: `Bearer ${t.token}` })],
        ['the same token again (query)', await get(`${t.url}?cordon_tunnel_token=${encodeURIComponent(t.token)}`)],
      ] as const;
      const ev = [`first use: HTTP ${first.status}`, ...again.map(([what, r]) => `${what}: HTTP ${r.status} ${r.reason}`.trim())];
      return again.some(([, r]) => r.body.includes(ctx.marker) || (r.status >= 300 && r.status < 400))
        ? succeeded('a spent token was accepted again', ...ev)
        : contained('the spent token was refused (token-used)', ...ev);
    });
  },
};

const guestOpens: Attack = {
  id: 'ingress.guest-opens-tunnel', category: 'ingress', title: 'the guest opens a tunnel to itself with its own credentials',
  async run(ctx) {
    const d = ctx.target.deployment;
    if (!d) return notApplicable('the weak setup has no operator API and no tunnels: a program there listens on the host network directly (see ingress.tunnel-without-token)');
    const before = d.tunnels.list().length;
    const body = `'{"sandboxId":"${d.sandboxes.main.id}","port":${GUEST_PORT},"bind":"0.0.0.0"}'`;
    const ev: string[] = [];
    for (const [what, cred, user] of [['identity token', '$(cat "$CORDON_TOKEN_FILE" 2>/dev/null)', 'root'], ['MCP key', '$CORDON_MCP_TOKEN', 'agent'], ['model key', '$OPENAI_API_KEY', 'agent']] as const) {
      const auth = `-X POST -H 'content-type: application/json' -H "Authorization: Bearer ${cred}" -d ${body} ${d.apiUrl}/v1/tunnels`;
      const r = await ctx.target.sh(`${curlLine(auth)}; ${curlLine(`--noproxy '' ${auth}`)}`, { user });
      ev.push(`${what} from the sandbox: ${brief(r, 300)}`);
    }
    const creds = (await ctx.target.sh('cat "$CORDON_TOKEN_FILE"; echo; echo "$CORDON_MCP_TOKEN"', { user: 'root' })).stdout.trim().split('\n');
    for (const cred of creds.filter(Boolean)) {
      const res = await fetch(`${d.apiUrl}/v1/tunnels`, {
        method: 'POST', headers: { authorization: `Bearer ${cred.trim()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ sandboxId: d.sandboxes.main.id, port: GUEST_PORT }), signal: AbortSignal.timeout(10_000),
      });
      await res.arrayBuffer();
      ev.push(`leaked agent credential on the host: POST /v1/tunnels → ${res.status}`);
    }
    const opened = d.tunnels.list().length - before;
    if (opened > 0 || ev.some((l) => /status=2\d\d|→ 2\d\d/.test(l))) return succeeded(`an agent credential opened a tunnel (${opened} new)`, ...ev);
    return contained('every agent credential was refused on /v1/tunnels; no tunnel was opened', ...ev);
  },
};

export const ingressAttacks: Attack[] = [noToken, reusedToken, guestOpens];
