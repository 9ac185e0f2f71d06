/**
 * The gateway's authenticator as the control plane builds it: a sandbox's
 * service key or token is accepted on that sandbox's channel only, refused
 * after the sandbox ends, and nothing is accepted without a channel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createIdentityService, createSandboxKeys } from '../identity/index.js';
import { createSecretsRouter, createSandboxSecrets, SecretValue, PLACEHOLDER_PATTERN } from '../secrets/index.js';
import { parseConfig } from '../config/index.js';
import { tempDir } from '../testkit/index.js';
import { createRedactionSource, createSandboxAuthenticator, LLM_AUDIENCE } from './services.js';

const A = { sandboxId: 'sb-aaaaaaaaaaaaaaaaaaaa', agent: 'coder' };
const B = { sandboxId: 'sb-bbbbbbbbbbbbbbbbbbbb', agent: 'coder' };

function req(headers: Record<string, string>) {
  return { method: 'POST', path: '/v1/chat/completions', header: (n: string) => headers[n] };
}

test('service keys and tokens are accepted on their own channel only', async () => {
  const d = tempDir();
  const ids = createIdentityService({ home: d.path, trustDomain: 'test.local', audiences: [LLM_AUDIENCE, 'mcp.cordon.internal'] });
  try {
    const keys = createSandboxKeys();
    const auth = createSandboxAuthenticator({ identity: ids, keys });
    const keyA = keys.issue(A.sandboxId);
    const tokenA = (await ids.issue({ id: A.sandboxId, agent: A.agent })).token;
    const mcpOnly = (await ids.issue({ id: A.sandboxId, agent: A.agent }, 'mcp.cordon.internal')).token;
    const cases: Array<{ name: string; headers: Record<string, string>; caller: typeof A | undefined; want: string }> = [
      { name: 'service key, own channel (Bearer)', headers: { authorization: `Bearer ${keyA}` }, caller: A, want: 'ok' },
      { name: 'service key, own channel (x-api-key)', headers: { 'x-api-key': keyA }, caller: A, want: 'ok' },
      { name: 'service key through another sandbox', headers: { authorization: `Bearer ${keyA}` }, caller: B, want: 'service-key-wrong-channel' },
      { name: 'token, own channel', headers: { authorization: `Bearer ${tokenA}` }, caller: A, want: 'ok' },
      { name: 'token through another sandbox', headers: { authorization: `Bearer ${tokenA}` }, caller: B, want: 'token-wrong-channel' },
      { name: 'token for another audience', headers: { authorization: `Bearer ${mcpOnly}` }, caller: A, want: 'token-wrong-audience' },
      { name: 'no credentials', headers: {}, caller: A, want: 'no-credentials' },
      { name: 'a provider-looking key', headers: { authorization: 'Bearer sk-proj-0123456789' }, caller: A, want: 'token-malformed' },
      { name: 'no channel at all', headers: { authorization: `Bearer ${keyA}` }, caller: undefined, want: 'no-channel' },
    ];
    for (const c of cases) {
      const r = await auth(req(c.headers), c.caller);
      const got = r.ok ? 'ok' : r.reason;
      if (c.want === 'token-malformed' || c.want === 'token-wrong-audience') assert.match(got, /^token-/, c.name);
      else assert.equal(got, c.want, c.name);
      if (r.ok) assert.deepEqual({ agent: r.agent, sandboxId: r.sandboxId }, A, c.name);
    }
    keys.revoke(A.sandboxId);
    ids.revoke(A.sandboxId);
    assert.equal((await auth(req({ authorization: `Bearer ${keyA}` }), A)).ok, false, 'service key after the sandbox ended');
    const t = await auth(req({ authorization: `Bearer ${tokenA}` }), A);
    assert.equal(t.ok ? 'ok' : t.reason, 'token-revoked');
  } finally {
    ids.close();
    d.cleanup();
  }
});

test('redaction is per caller: its placeholders and values, and the placeholder shape for everyone', () => {
  const config = parseConfig(`
version: 1
agents:
  coder: { env: { T: "{{secret.t}}" } }
secrets:
  t: { from: env, name: T }
`);
  const router = createSecretsRouter();
  const ss = createSandboxSecrets({ agentName: 'coder', agent: config.agents.coder!, values: new Map([['t', new SecretValue('t', Buffer.from('the-real-value-1234'))]]) });
  router.register(A.sandboxId, ss);
  const redact = createRedactionSource(router);
  const a = redact(A)!;
  assert.deepEqual([...a.values].sort(), [ss.placeholderOf('t')!, 'the-real-value-1234'].sort());
  assert.equal(redact(A), a, 'the same list object while the sandbox lives (compiled once)');
  assert.deepEqual(redact(B), { values: [], patterns: [PLACEHOLDER_PATTERN] });
});
