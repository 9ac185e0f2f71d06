/**
 * The dashboard in a real browser (Debian's Chromium, headless, driven by
 * playwright-core) against a real control plane: the bundle is built from
 * `web/` by Vite into a temporary directory and served by the control plane
 * at `/ui/`; a real microVM sandbox sends `POST /deploy` to a loopback
 * upstream through its door, where the rule `approve` holds it. The page
 * shows the held request, the operator approves it there, and the sandbox's
 * curl completes with the upstream's answer. Also: wrong and agent tokens are
 * refused, a replaced token signs the page out with the reason, a decision
 * made elsewhere (CLI) is shown as such (both when the live stream brings it
 * and when the page's own POST gets 409), alerts can be acknowledged, the
 * red-team page says plainly when there is no scorecard, and a stopped
 * control plane is reported as such. Each page is saved as a screenshot
 * under docs/screenshots/.
 *
 * A microVM rather than bubblewrap: the cold boot under TCG costs a few
 * seconds and proves the path that production takes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { parseConfig } from '../config/index.js';
import { startControlPlane, type ControlPlane } from '../controlplane/index.js';
import { openDetectStore } from '../detect/index.js';
import { vmSkipReason } from '../sandbox/microvm/testing.js';
import type { SandboxInfo } from '../sandbox/index.js';
import { sandboxTestHome, type SandboxTestHome } from '../sdk/testing.js';
import { cordon, oneJson } from '../cli/commands/testing.js';
import { DASHBOARD_CSP } from './index.js';

const CHROMIUM = '/usr/bin/chromium';
const AGENT = 'deployer';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SHOTS = join(ROOT, 'docs', 'screenshots');
const skip = vmSkipReason() || (existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install -y chromium)`);

interface Curl {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

describe('the dashboard in Chromium against a live control plane', { skip, timeout: 6 * 60_000 }, () => {
  let bundle: string;
  let home: SandboxTestHome;
  let cp: ControlPlane;
  let upstream: Server;
  let port: number;
  let sb: SandboxInfo;
  let browser: Browser;
  let page: Page;
  const received: string[] = [];
  const foreignRequests: string[] = [];
  let stopped = false;

  before(async () => {
    // The bundle, built from web/ exactly as `npm run build` does, but into a temporary directory.
    bundle = mkdtempSync(join(tmpdir(), 'cordon-dashboard-bundle-'));
    const { build } = await import('vite');
    await build({ root: join(ROOT, 'web'), logLevel: 'warn', build: { outDir: bundle, emptyOutDir: true } });

    upstream = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => {
        received.push(`${req.method} ${req.url} ${body}`);
        res.end(`deployed: ${body}\n`);
      });
    });
    upstream.listen(0, '127.0.0.1');
    await new Promise((r) => upstream.once('listening', r));
    port = (upstream.address() as AddressInfo).port;

    home = await sandboxTestHome();
    const config = parseConfig(`
version: 1
agents:
  ${AGENT}:
    isolation: microvm
    resources: { vcpus: 1, memoryMiB: 512, timeout: 10m }
    egress:
      - { cidr: 127.0.0.1/32, ports: [${port}], rules: [ { method: POST, path: /deploy, action: approve } ] }
approvals: { ttl: 5m, holdTimeout: 3m }
`);
    cp = await startControlPlane({ home: home.path, config, port: 0, dashboardDir: bundle });
    sb = await cp.sandboxes.create({ agent: AGENT, caller: { actor: 'operator' } });

    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-background-networking'] });
    page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    page.on('request', (r) => {
      if (!r.url().startsWith(cp.url) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) foreignRequests.push(r.url());
    });
    mkdirSync(SHOTS, { recursive: true });
  });

  after(async () => {
    await browser?.close();
    if (!stopped) await cp?.stop();
    upstream?.close();
    home?.cleanup();
    if (bundle) rmSync(bundle, { recursive: true, force: true });
  });

  /** curl in the guest, through the door, to the loopback upstream; resolves when the request ends. */
  function heldCurl(body: string): Promise<Curl> {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const cmd = `curl -sS --noproxy '' -x http://127.0.0.1:3128 -w '\\n%{http_code} %header{x-cordon-error}' -X POST --data '${body}' http://127.0.0.1:${port}/deploy`;
    return cp.sandboxes.run(sb.id, {
      argv: ['sh', '-c', cmd], timeoutMs: 240_000, onStdout: (b) => out.push(b), onStderr: (b) => err.push(b),
    }, { actor: 'operator' }).then((r) => ({ exitCode: r.exitCode, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
  }

  async function pendingId(body: string): Promise<string> {
    for (let i = 0; i < 300; i++) {
      const found = (await cp.approvals.list({ state: 'pending' })).find((a) => a.action.bodyExcerpt === body);
      if (found) return found.id;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no pending approval with body ${body}`);
  }

  /** Poll `check` (in this process, not in the page: its CSP forbids eval) until it holds. */
  async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail(`not within ${timeoutMs} ms: ${what}`);
  }

  async function shot(name: string): Promise<void> {
    await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  }

  async function signIn(token: string): Promise<void> {
    await page.fill('#token', token);
    await page.click('button[type=submit]');
  }

  test('the page is served at /ui/ with a strict CSP; wrong tokens and agent credentials are refused', async () => {
    const res = await page.goto(`${cp.url}/`);
    assert.equal(res?.status(), 200);
    assert.equal(new URL(page.url()).pathname, '/ui/');
    assert.equal(res?.headers()['content-security-policy'], DASHBOARD_CSP);
    assert.match(DASHBOARD_CSP, /script-src 'self'/);
    assert.equal(res?.headers()['x-frame-options'], 'DENY');
    assert.equal(cp.dashboardUrl, `${cp.url}/ui/`);

    const cases: Array<{ name: string; token: string; says: RegExp }> = [
      { name: 'a made-up token', token: 'cordon-op-0000000000000000000000000000000000000000', says: /does not accept this token/ },
      { name: 'a sandbox service key', token: `cordon-sk-${'a'.repeat(43)}`, says: /sandbox service key, an agent credential/ },
      { name: 'an identity token', token: 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln', says: /sandbox identity token, an agent credential/ },
    ];
    for (const c of cases) {
      await signIn(c.token);
      await page.waitForSelector('#signin-problem');
      assert.match(await page.textContent('#signin-problem') ?? '', c.says, c.name);
      assert.equal(await page.evaluate("sessionStorage.getItem('cordon.operatorToken')"), null, `${c.name} is not kept`);
    }
    await shot('signin');
    // The server refuses an agent credential on the approvals API too, whatever the page does.
    const direct = await fetch(`${cp.url}/v1/approvals`, { headers: { authorization: `Bearer cordon-sk-${'a'.repeat(43)}` } });
    assert.equal(direct.status, 403);
  });

  test('sign in, see the held request, approve it: the sandbox\'s curl completes with the upstream body', async () => {
    await signIn(cp.operatorToken.token);
    await page.waitForSelector('#approvals-page');
    await page.waitForSelector('#live-status.live');
    const curl = heldCurl('ship-it');
    const id = await pendingId('ship-it');
    const card = page.locator(`[data-approval="${id}"]`);
    await card.waitFor({ timeout: 20_000 });
    const text = await card.textContent() ?? '';
    for (const want of ['POST', `http://127.0.0.1:${port}/deploy`, 'ship-it', AGENT, sb.id, id]) assert.ok(text.includes(want), `the card shows ${want}: ${text}`);
    assert.match(text, /expires\s*in \d/);
    assert.deepEqual(received, [], 'nothing reached the upstream before the decision');
    await shot('approvals');

    await card.locator('input.reason').fill('expected release');
    await card.locator('button.approve').click();
    const outcome = page.locator(`[data-outcome="${id}"]`);
    await outcome.waitFor();
    assert.match(await outcome.textContent() ?? '', /Approved by operator at .*expected release/);

    const done = await curl;
    assert.equal(done.exitCode, 0, done.stderr);
    assert.equal(done.stdout, 'deployed: ship-it\n\n200 ');
    assert.deepEqual(received, ['POST /deploy ship-it']);

    // The decision is in the CLI and the audit log at once.
    const shown = await cordon(['approvals', 'show', id, '--json'], { home: home.path });
    assert.equal(shown.code, 0, shown.stderr);
    const a = oneJson<{ state: string; decidedBy: string; reason: string; consumedAt?: string }>(shown);
    assert.deepEqual([a.state, a.decidedBy, a.reason], ['approved', 'operator', 'expected release']);
    const decided = (await cp.audit.query({ type: 'approval.decided', limit: 100 })).filter((e) => (e.data as { id?: string }).id === id);
    assert.equal(decided.length, 1);
    assert.equal(decided[0]!.decision, 'approve');
    // The page follows the approval to its use.
    await eventually(async () => /released at/.test(await outcome.textContent() ?? ''), 'the outcome says the held request was released');
  });

  test('a decision made elsewhere is shown as such, live and on a 409, never as the page\'s own', async () => {
    // Live: the CLI denies while the card is on screen.
    const first = heldCurl('first');
    const id1 = await pendingId('first');
    await page.locator(`[data-approval="${id1}"]`).waitFor({ timeout: 20_000 });
    const cli = await cordon(['approvals', 'deny', id1, '--reason', 'not today'], { home: home.path });
    assert.equal(cli.code, 0, cli.stderr);
    const out1 = page.locator(`[data-outcome="${id1}"]`);
    await out1.waitFor({ timeout: 15_000 });
    assert.match(await out1.textContent() ?? '', new RegExp(`Approval ${id1} was already denied elsewhere by operator at .*not today`));
    assert.equal(await page.locator(`[data-approval="${id1}"]`).count(), 0, 'no decision buttons stay for it');
    const r1 = await first;
    assert.equal(r1.stdout.trim().split('\n').pop(), '403 approval-denied');

    // 409: the page's approve reaches the server only after the CLI's deny.
    const second = heldCurl('second');
    const id2 = await pendingId('second');
    const card = page.locator(`[data-approval="${id2}"]`);
    await card.waitFor({ timeout: 20_000 });
    let status409 = 0;
    await page.route(`**/v1/approvals/${id2}/approve`, async (route) => {
      const r = await cordon(['approvals', 'deny', id2, '--reason', 'denied first'], { home: home.path });
      assert.equal(r.code, 0, r.stderr);
      const res = await route.fetch();
      status409 = res.status();
      await route.fulfill({ response: res });
    });
    await card.locator('button.approve').click();
    const out2 = page.locator(`[data-outcome="${id2}"]`);
    await out2.waitFor({ timeout: 20_000 });
    assert.equal(status409, 409);
    const said = await out2.textContent() ?? '';
    assert.match(said, new RegExp(`Approval ${id2} was already denied elsewhere by operator at .*denied first.*Your approve was not applied`));
    assert.doesNotMatch(said, /Approved by/);
    assert.equal(await out2.getAttribute('data-state'), 'denied');
    const r2 = await second;
    assert.equal(r2.stdout.trim().split('\n').pop(), '403 approval-denied');
    assert.deepEqual(received, ['POST /deploy ship-it'], 'denied requests never reached the upstream');
    await shot('approvals-decided-elsewhere');
    await page.unroute(`**/v1/approvals/${id2}/approve`);
  });

  test('sandboxes: the list states the tier plainly with resource use; the detail view shows commands and network decisions', async () => {
    await page.goto(`${cp.url}/ui/#/sandboxes`);
    const row = page.locator(`[data-sandbox="${sb.id}"]`);
    await row.waitFor();
    const text = await row.textContent() ?? '';
    assert.match(text, /running/);
    assert.match(text, sb.tier === 'microvm-kvm' ? /microVM · KVM/ : /microVM · TCG \(own kernel, software emulation/);
    assert.match(text, /\d+(\.\d)? MiB of 512 MiB RAM · \d+\.\d CPU s · 1 vCPU/);
    await shot('sandboxes');

    await page.goto(`${cp.url}/ui/#/sandboxes/${sb.id}`);
    await eventually(async () => (await page.locator('#detail-commands').textContent() ?? '').includes('curl'), 'the detail view lists the curl command');
    assert.match(await page.textContent('#detail-network') ?? '', /egress\.request/);
    assert.match(await page.textContent('#detail-network') ?? '', /approval\.decided/);
    await shot('sandbox-detail');
  });

  test('audit: filters, chain verification and export', async () => {
    await page.goto(`${cp.url}/ui/#/audit`);
    await page.waitForSelector('#verify-status.ok');
    assert.match(await page.textContent('#verify-status') ?? '', /Chain intact: \d+ events checked/);
    await page.fill('#filter-type', 'approval.decided');
    // A live event arrives while the field is still being edited (it re-renders the page): the typing must survive it.
    await cp.audit.append({ type: 'dashboard.test-marker', actor: 'system', data: {} });
    await page.locator('#audit-table tbody tr td:nth-child(3)', { hasText: 'dashboard.test-marker' }).waitFor();
    assert.equal(await page.inputValue('#filter-type'), 'approval.decided', 'a live event while typing does not reset the field');
    await page.locator('#filter-type').blur();
    await eventually(async () => {
      const types = await page.locator('#audit-table tbody tr td:nth-child(3)').allTextContents();
      return types.length === 3 && types.every((t) => t === 'approval.decided');
    }, 'the table holds exactly the three decisions');
    await shot('audit');
    const download = page.waitForEvent('download');
    await page.click('#export');
    const file = await (await download).path();
    const { readFileSync } = await import('node:fs');
    const lines = readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as { type: string; hash: string });
    assert.equal(lines.length, 3);
    assert.ok(lines.every((l) => l.type === 'approval.decided' && /^[0-9a-f]{64}$/.test(l.hash)));
  });

  test('alerts show their evidence and can be acknowledged; the red-team page says when there is no scorecard, then shows it', async () => {
    const ds = await openDetectStore(cp.store);
    await ds.insertAlert({
      id: 'al-dashboard-test-1', ts: new Date().toISOString(), agent: AGENT, sandbox: sb.id, kind: 'novelty', feature: 'domain',
      value: 'exfil.example', score: 4.2, evidence: { seenBefore: ['api.example.com'], newValue: 'exfil.example' }, action: 'pause',
    });
    await page.goto(`${cp.url}/ui/#/alerts`);
    const alert = page.locator('[data-alert="al-dashboard-test-1"]');
    await alert.waitFor();
    assert.match(await alert.textContent() ?? '', /exfil\.example[\s\S]*seenBefore/);
    await shot('alerts');
    await alert.locator('button').click();
    await alert.waitFor({ state: 'detached' });
    const acked = (await ds.listAlerts({ acked: true })).find((a) => a.id === 'al-dashboard-test-1');
    assert.equal(acked?.ackedBy, 'operator');
    assert.equal((await cp.audit.query({ type: 'alert.acked', limit: 10 })).length, 1);

    await page.goto(`${cp.url}/ui/#/redteam`);
    await page.waitForSelector('#redteam-none');
    mkdirSync(join(home.path, 'redteam'), { recursive: true });
    writeFileSync(join(home.path, 'redteam', 'latest.json'), JSON.stringify({
      startedAt: '2026-11-27T05:00:00.000Z', finishedAt: '2026-11-27T05:03:10.000Z', profile: 'test-fixture', durationMs: 190_000,
      summary: { total: 3, contained: 2, succeeded: 1, errors: 0, notApplicable: 0 },
      attacks: [
        { id: 'egress.dns-tunnel', category: 'egress', title: 'DNS tunnel out of the guest', outcome: 'contained', evidence: ['no resolver in the guest'], durationMs: 1200 },
        { id: 'secrets.base64', category: 'secrets', title: 'Secret sent base64-encoded', outcome: 'contained', evidence: ['403 secret-exfiltration'], durationMs: 900 },
        { id: 'fixture.always-succeeds', category: 'fixture', title: 'Fixture attack that always succeeds (test data)', outcome: 'succeeded', evidence: ['written by the dashboard test'], durationMs: 300 },
      ],
    }));
    await page.reload();
    await page.waitForSelector('#redteam-summary');
    assert.match(await page.textContent('#redteam-summary') ?? '', /1 succeeded\s*2 contained/);
    assert.match(await page.textContent('#redteam-attacks tbody tr:first-child') ?? '', /succeeded.*Fixture attack that always succeeds/);
    await shot('redteam');
  });

  test('sandboxes: pause, resume and destroy from the page (destroy asks first), each audited as the operator', async () => {
    await page.goto(`${cp.url}/ui/#/sandboxes`);
    const row = page.locator(`[data-sandbox="${sb.id}"]`);
    await row.waitFor();
    await row.getByRole('button', { name: 'Pause' }).click();
    await row.getByRole('button', { name: 'Resume' }).waitFor();
    assert.equal(cp.sandboxes.get(sb.id).state, 'paused');
    assert.match(await row.textContent() ?? '', /paused/);
    await row.getByRole('button', { name: 'Resume' }).click();
    await row.getByRole('button', { name: 'Pause' }).waitFor();
    assert.equal(cp.sandboxes.get(sb.id).state, 'running');
    await row.getByRole('button', { name: 'Destroy…' }).click();
    assert.equal(cp.sandboxes.get(sb.id).state, 'running', 'the first click only asks');
    await row.getByRole('button', { name: `Destroy ${sb.id}: yes` }).click();
    await row.waitFor({ state: 'detached' });
    assert.deepEqual(cp.sandboxes.list().map((s) => s.id), []);
    const lifecycle = (await cp.audit.query({ sandbox: sb.id, limit: 1000 }))
      .filter((e) => ['sandbox.pause', 'sandbox.resume', 'sandbox.destroy'].includes(e.type)).map((e) => `${e.type} ${e.actor}`);
    assert.deepEqual(lifecycle, ['sandbox.pause operator', 'sandbox.resume operator', 'sandbox.destroy operator']);
  });

  test('a replaced token signs the page out with the reason; a stopped control plane is reported, not hidden', async (t) => {
    await page.goto(`${cp.url}/ui/#/approvals`);
    await page.waitForSelector('#live-status.live');
    await page.evaluate("sessionStorage.setItem('cordon.operatorToken', 'cordon-op-revoked-0000000000000000000000000000')");
    await page.reload();
    await page.waitForSelector('.signin .notice');
    assert.match(await page.textContent('.signin .notice') ?? '', /no longer accepts your operator token/);

    await signIn(cp.operatorToken.token);
    await page.waitForSelector('#live-status.live');
    stopped = true;
    const stopStarted = performance.now();
    await cp.stop();
    const stopMs = performance.now() - stopStarted;
    t.diagnostic(`cordon stopped in ${Math.round(stopMs)} ms with the page's event stream open`);
    assert.ok(stopMs < 1500, 'an open event stream does not hold the stop (the server would wait 2 s for it)');
    await page.waitForSelector('#live-status.down', { timeout: 20_000 });
    await page.waitForSelector('#trouble.unreachable', { timeout: 20_000 });
    assert.match(await page.textContent('#trouble') ?? '', /control plane is not answering/);
    assert.match(await page.textContent('#approvals-page .stale') ?? '', /Not live/);
    await shot('daemon-gone');
    assert.deepEqual(foreignRequests, [], 'the page asked nothing of any other origin');
  });
});
