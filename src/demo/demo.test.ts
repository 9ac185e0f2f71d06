/**
 * `cordon demo` end to end in a real microVM (TCG on the development
 * machines), judged from the demo's audit log as stored, read here on its
 * own rather than through the demo's verdict: the allowed call carried the
 * secret swapped in by the proxy, the metadata endpoint and the unlisted host
 * were refused at the door, the payment was held, approved by the operator
 * and forwarded once, the prompt injection was flagged, every model call was
 * served by the scripted provider and labelled so, the token is in no event,
 * and the log verifies. With `--provider`, the same run against an
 * OpenAI-compatible endpoint on loopback: its key is sent by the gateway
 * only and is in no audit event. Also: what the demo says on a machine
 * without QEMU or without the image, and for an unknown provider.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { queryEvents, verifyAudit, type AuditEvent } from '../audit/index.js';
import { defaultConfig, parseConfig } from '../config/index.js';
import { keyDir } from '../controlplane/index.js';
import { CordonError } from '../errors/index.js';
import { ensureTestImage, testHome } from '../sandbox/image/testing.js';
import { vmSkipReason } from '../sandbox/microvm/testing.js';
import { openStore } from '../store/index.js';
import { answerChat, DEMO_CONVERSATION } from '../gateway/providers/scripted.js';
import { DEMO_API_HOST, DEMO_SECRET, preflight, runDemo, silentReporter, terminalReporter } from './index.js';

const skip = vmSkipReason();

function secretsOf(e: AuditEvent): string[] {
  const list = (e.data.hook as { secrets?: Array<{ secret?: string }> } | undefined)?.secrets ?? [];
  return list.map((s) => String(s.secret));
}

describe('cordon demo in a real microVM', { skip, timeout: 3 * 60_000 }, () => {
  test('every expected outcome is in the audit log, and the log verifies', async (t) => {
    const home = testHome();
    await ensureTestImage(home);
    const out: string[] = [];
    const startedMs = performance.now();
    const result = await runDemo({ home, userConfig: defaultConfig(), reporter: terminalReporter((x) => void out.push(x)) });
    t.diagnostic(`demo took ${Math.round(performance.now() - startedMs)} ms, tier ${result.tier}, ${result.events} events`);
    const printed = out.join('');
    assert.equal(result.ok, true, `failed: ${result.failed.join(', ')}\n${printed}`);
    assert.ok(result.sandbox);

    const store = await openStore({ kind: 'sqlite', path: join(result.demoHome, 'cordon.db') });
    let all: AuditEvent[] = [];
    try {
      for (;;) {
        const page = await queryEvents(store, { afterSeq: all.at(-1)?.seq ?? 0, limit: 1000, order: 'asc' });
        all = all.concat(page);
        if (page.length < 1000) break;
      }
      const report = await verifyAudit(store, { keyDir: keyDir(result.demoHome) });
      assert.equal(report.ok, true, report.message);
    } finally {
      await store.close();
    }
    const mine = all.filter((e) => e.sandbox === result.sandbox);
    const egress = mine.filter((e) => e.type === 'egress.request');
    const host = (e: AuditEvent): unknown => e.data.host;

    // (1) the allowed call: intercepted, the placeholder swapped for the bound secret, 200 at the far end
    const inbox = egress.find((e) => host(e) === DEMO_API_HOST && e.data.method === 'GET' && e.data.path === '/v1/inbox');
    assert.equal(inbox?.decision, 'allow');
    assert.deepEqual(secretsOf(inbox!), [DEMO_SECRET]);
    const inboxClose = mine.find((e) => e.type === 'egress.close' && e.data.conn === inbox!.data.conn && e.data.path === '/v1/inbox');
    assert.equal(inboxClose?.data.status, 200);

    // (2) refusals at the door, with their reasons
    const metadata = egress.filter((e) => host(e) === '169.254.169.254');
    assert.ok(metadata.length >= 1 && metadata.every((e) => e.decision === 'deny'), JSON.stringify(metadata));
    const unlisted = egress.filter((e) => host(e) === 'rates.unlisted-demo.net');
    assert.ok(unlisted.length >= 1 && unlisted.every((e) => e.decision === 'deny' && e.reason === 'host-not-allowed'), JSON.stringify(unlisted));

    // (3) held, approved by an operator (not the agent), used once, then forwarded with the secret
    const requested = mine.filter((e) => e.type === 'approval.requested');
    assert.equal(requested.length, 1);
    const id = requested[0]!.data.id;
    const decided = mine.find((e) => e.type === 'approval.decided' && e.data.id === id);
    assert.equal(decided?.decision, 'approve');
    assert.match(decided!.actor, /^operator/);
    assert.ok(decided!.seq > requested[0]!.seq);
    assert.equal(mine.filter((e) => e.type === 'approval.consumed' && e.data.id === id).length, 1);
    const paid = egress.filter((e) => e.data.method === 'POST' && e.data.path === '/v1/payments' && e.data.scheme === 'https');
    assert.equal(paid.length, 1);
    assert.equal(paid[0]!.data.approval, id);
    assert.ok(paid[0]!.seq > decided!.seq);
    assert.deepEqual(secretsOf(paid[0]!), [DEMO_SECRET]);

    // (4) the model: every call served by the scripted provider; the injection flagged
    const llm = mine.filter((e) => e.type === 'llm.response');
    assert.equal(llm.length, 5, 'five scripted turns');
    assert.ok(llm.every((e) => e.data.provider === 'scripted' && e.reason === 'ok'), JSON.stringify(llm.map((e) => e.data)));
    const flagged = mine.filter((e) => e.type === 'llm.request' && ((e.data.hits ?? []) as Array<{ filter?: string }>).some((h) => h.filter === 'injection'));
    assert.ok(flagged.length >= 1);

    // (5) the token never reached the log (it has the shape demo-token-<hex>), the sandbox is gone
    assert.ok(!all.some((e) => JSON.stringify(e).includes('demo-token-')), 'the API token is in an audit event');
    assert.ok(mine.some((e) => e.type === 'sandbox.destroy'));

    // (6) the terminal said what it was doing
    for (const expected of ['SCRIPTED', 'OPERATOR', 'egress.request deny (host-not-allowed)', 'approval.requested approve (held)', 'audit log ok']) {
      assert.ok(printed.includes(expected), `the output lacks ${JSON.stringify(expected)}`);
    }
  });
});

/** The demo's turns in the Anthropic Messages shape (what a cooperative Claude model would answer). */
function anthropicAnswer(bodyText: string): { status: number; contentType: string; body: string } {
  const chat = answerChat(DEMO_CONVERSATION, bodyText);
  const c = (JSON.parse(chat.body) as { choices: Array<{ message: { content: string; tool_calls?: Array<{ id: string; function: { name: string; arguments: string } }> } }>; usage: { prompt_tokens: number; completion_tokens: number } });
  const m = c.choices[0]!.message;
  const content = [
    { type: 'text', text: m.content },
    ...(m.tool_calls ?? []).map((t) => ({ type: 'tool_use', id: `toolu_${t.id}`, name: t.function.name, input: JSON.parse(t.function.arguments) as unknown })),
  ];
  return {
    status: 200, contentType: 'application/json',
    body: JSON.stringify({
      id: 'msg_demo', type: 'message', role: 'assistant', model: 'claude-demo', content,
      stop_reason: m.tool_calls ? 'tool_use' : 'end_turn', stop_sequence: null,
      usage: { input_tokens: c.usage.prompt_tokens, output_tokens: c.usage.completion_tokens },
    }),
  };
}

describe('cordon demo with a provider of cordon.yaml', { skip, timeout: 3 * 60_000 }, () => {
  const dialects = [
    {
      name: 'an OpenAI-compatible endpoint (as Ollama serves)', type: 'openai-compatible', model: 'local-model' as string | undefined,
      baseUrl: (port: number) => `http://127.0.0.1:${port}/v1`, path: '/v1/chat/completions',
      credential: (h: Record<string, string | string[] | undefined>, key: string) => h.authorization === `Bearer ${key}`,
      answer: (body: string) => answerChat(DEMO_CONVERSATION, body), expectModel: 'local-model',
    },
    {
      name: 'an Anthropic endpoint (the agent speaks /v1/messages; default model)', type: 'anthropic', model: undefined,
      baseUrl: (port: number) => `http://127.0.0.1:${port}`, path: '/v1/messages',
      credential: (h: Record<string, string | string[] | undefined>, key: string) => h['x-api-key'] === key && h.authorization === undefined,
      answer: anthropicAnswer, expectModel: 'claude-sonnet-4-5',
    },
  ];
  for (const d of dialects) {
    test(`--provider with ${d.name}: the same outcomes; its key is sent by the gateway only`, async () => {
      const home = testHome();
      await ensureTestImage(home);
      const key = `sk-local-${randomBytes(12).toString('hex')}`;
      const seen: Array<{ path: string; credentialOk: boolean; model: string }> = [];
      // A server on loopback that answers with the demo's turns (what a cooperative model would do).
      const upstream = createServer((req, res) => {
        let body = '';
        req.on('data', (b: Buffer) => (body += b.toString('utf8')));
        req.on('end', () => {
          seen.push({ path: req.url ?? '', credentialOk: d.credential(req.headers, key), model: String((JSON.parse(body) as { model?: string }).model) });
          const a = d.answer(body);
          res.writeHead(a.status, { 'content-type': a.contentType });
          res.end(a.body);
        });
      });
      upstream.listen(0, '127.0.0.1');
      await once(upstream, 'listening');
      try {
        const port = (upstream.address() as AddressInfo).port;
        const userConfig = parseConfig(`
version: 1
secrets:
  local_key: { from: env, name: DEMO_TEST_LOCAL_KEY }
providers:
  local: { type: ${d.type}, baseUrl: "${d.baseUrl(port)}", apiKey: "{{secret.local_key}}" }
`);
        const result = await runDemo({
          home, userConfig, provider: 'local', reporter: silentReporter, ...(d.model ? { model: d.model } : {}),
          env: { ...process.env, DEMO_TEST_LOCAL_KEY: key },
        });
        assert.equal(result.ok, true, `failed: ${result.failed.join(', ')}; agent: ${JSON.stringify(result.agent)}`);
        assert.deepEqual(result.model, { provider: 'local', type: d.type, model: `local/${d.expectModel}`, scripted: false });
        assert.equal(seen.length, 5);
        assert.ok(seen.every((r) => r.credentialOk && r.model === d.expectModel && r.path === d.path), JSON.stringify(seen));
        const store = await openStore({ kind: 'sqlite', path: join(result.demoHome, 'cordon.db') });
        try {
          const events = await queryEvents(store, { sandbox: result.sandbox!, limit: 10_000 });
          const llm = events.filter((e) => e.type === 'llm.response');
          assert.equal(llm.length, 5);
          assert.ok(llm.every((e) => e.data.provider === 'local' && e.reason === 'ok'));
          assert.ok(!events.some((e) => JSON.stringify(e).includes(key)), 'the provider key is in an audit event');
        } finally {
          await store.close();
        }
      } finally {
        upstream.close();
      }
    });
  }

  test('an unknown provider is refused with the names that exist', async () => {
    await assert.rejects(runDemo({ home: testHome(), userConfig: defaultConfig(), provider: 'nope', reporter: silentReporter }), (err: CordonError) => {
      assert.match(err.message, /no provider "nope"/);
      assert.match(err.fix ?? '', /leave --provider out/);
      return true;
    });
  });
});

describe('cordon demo before anything is installed', () => {
  test('no QEMU on PATH: the error names the command that installs it', () => {
    const home = mkdtempSync(join(tmpdir(), 'cordon-demo-noqemu-'));
    try {
      assert.throws(() => preflight(home, { PATH: join(home, 'bin') }), (err: CordonError) => {
        assert.equal(err.code, 'env-no-qemu');
        assert.match(err.fix ?? '', /install\.sh|apt-get install -y qemu-system-x86 qemu-utils/);
        return true;
      });
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  test('no image: the error says `cordon image build`', { skip: vmSkipReason() === 'QEMU is not installed (apt-get install -y qemu-system-x86 qemu-utils)' ? 'needs QEMU on PATH to get past the first check' : false }, () => {
    const home = mkdtempSync(join(tmpdir(), 'cordon-demo-noimage-'));
    try {
      assert.throws(() => preflight(home), (err: CordonError) => {
        assert.equal(err.code, 'env-no-image');
        assert.match(err.fix ?? '', /cordon image build/);
        return true;
      });
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
