/**
 * Identity service tests: issuing, and one named refusal per reason. Every
 * bad token is built for real: by the service (expired, revoked, other
 * channel, other audience), by hand with node:crypto (`alg: none`, HS256
 * keyed with the public key, a key the ring never had, claims signed with the
 * ring's own key), or by editing a real token (tampered payload).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidInputError, KeyError } from '../errors/index.js';
import { tempDir } from '../testkit/index.js';
import {
  createIdentityService, IdentityError, jwkThumbprint, REFUSAL_REASONS, TOKEN_CHARS, type IdentityService, type RefusalReason,
} from './index.js';

const TD = 'agents.example.org';
const LLM = 'llm.cordon.internal';
const MCP = 'mcp.cordon.internal';
const A = { id: 'sb-aaaaaaaaaaaaaaaaaaaa', agent: 'reviewer' };
const B = { id: 'sb-bbbbbbbbbbbbbbbbbbbb', agent: 'reviewer' };
const T0 = 1_700_000_000_000;

interface Fixture {
  ids: IdentityService;
  home: string;
  advance(ms: number): void;
  nowSec(): number;
  /** The ring's active signing key, read from its file as an attacker with the key would. */
  realKey(): { kid: string; privateKey: KeyObject };
  close(): void;
}

function fixture(opts: { ttlMs?: number } = {}): Fixture {
  const tmp = tempDir();
  let t = T0 + 250;
  const ids = createIdentityService({ home: tmp.path, trustDomain: TD, audiences: [LLM, MCP], now: () => t, ...opts });
  return {
    ids,
    home: tmp.path,
    advance: (ms) => void (t += ms),
    nowSec: () => Math.floor(t / 1000),
    realKey() {
      const kid = ids.keys().find((k) => k.active)!.kid;
      const file = JSON.parse(readFileSync(join(tmp.path, 'keys', 'identity', `${kid}.json`), 'utf8')) as { privateKeyPem: string };
      return { kid, privateKey: createPrivateKey(file.privateKeyPem) };
    },
    close() {
      ids.close();
      tmp.cleanup();
    },
  };
}

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A compact JWS signed with an Ed25519 key, built without jose. */
function signEd(header: object, payload: unknown, key: KeyObject): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${sign(null, Buffer.from(input), key).toString('base64url')}`;
}

function hs256(header: object, payload: object, secret: Buffer | string): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** Claims as the service would write them for sandbox A, at the fixture's time. */
function claims(f: Fixture, over: Record<string, unknown> = {}): Record<string, unknown> {
  const iat = f.nowSec();
  return {
    iss: `spiffe://${TD}`, sub: `spiffe://${TD}/agent/${A.agent}/sandbox/${A.id}`, aud: [LLM, MCP],
    iat, nbf: iat, exp: iat + 600, jti: 'AAAAAAAAAAAAAAAAAAAAAA', ...over,
  };
}

function publicOf(f: Fixture): KeyObject {
  return createPublicKey(f.realKey().privateKey);
}

interface RefusalCase {
  name: string;
  reason: RefusalReason;
  /** Builds the bad token (and may change the fixture: clock, revocation). */
  build(f: Fixture): Promise<string> | string;
  audience?: string;
  channel?: string;
}

const refusals: RefusalCase[] = [
  {
    name: 'expired: the clock is past exp plus the clock tolerance',
    reason: 'expired',
    async build(f) {
      const { token } = await f.ids.issue(A);
      f.advance(600_000 + 5_000);
      return token;
    },
  },
  {
    name: 'not yet valid: nbf in the future (signed with the real key)',
    reason: 'not-yet-valid',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT', kid: f.realKey().kid }, claims(f, { nbf: f.nowSec() + 60 }), f.realKey().privateKey),
  },
  {
    name: 'not yet valid: iat in the future, nbf now (signed with the real key)',
    reason: 'not-yet-valid',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT', kid: f.realKey().kid }, claims(f, { iat: f.nowSec() + 60 }), f.realKey().privateKey),
  },
  {
    name: 'not yet valid: issued by a service whose clock is a minute ahead',
    reason: 'not-yet-valid',
    async build(f) {
      f.advance(60_000);
      const { token } = await f.ids.issue(A);
      f.advance(-60_000);
      return token;
    },
  },
  {
    name: 'wrong audience: a token for the tools gateway shown to the LLM gateway',
    reason: 'wrong-audience',
    build: async (f) => (await f.ids.issue(A, MCP)).token,
    audience: LLM,
  },
  {
    name: 'revoked: the sandbox has ended',
    reason: 'revoked',
    async build(f) {
      const { token } = await f.ids.issue(A);
      f.ids.revoke(A.id);
      return token;
    },
  },
  {
    name: "wrong channel: sandbox A's token presented over sandbox B's channel",
    reason: 'wrong-channel',
    build: async (f) => (await f.ids.issue(A)).token,
    channel: B.id,
  },
  {
    name: 'alg none with an empty signature',
    reason: 'alg-not-allowed',
    build: (f) => `${b64({ alg: 'none', typ: 'JWT', kid: f.realKey().kid })}.${b64(claims(f))}.`,
  },
  {
    name: 'alg None (other case) with a real signature attached',
    reason: 'alg-not-allowed',
    build: (f) => signEd({ alg: 'None', typ: 'JWT', kid: f.realKey().kid }, claims(f), f.realKey().privateKey),
  },
  {
    name: 'HS256 keyed with the PEM public key',
    reason: 'alg-not-allowed',
    build: (f) => hs256({ alg: 'HS256', typ: 'JWT', kid: f.realKey().kid }, claims(f), publicOf(f).export({ format: 'pem', type: 'spki' }).toString()),
  },
  {
    name: 'HS256 keyed with the raw 32-byte public key',
    reason: 'alg-not-allowed',
    build: (f) => hs256({ alg: 'HS256', typ: 'JWT', kid: f.realKey().kid }, claims(f), Buffer.from(String(publicOf(f).export({ format: 'jwk' }).x), 'base64url')),
  },
  {
    name: 'HS256 keyed with the JWKS x string',
    reason: 'alg-not-allowed',
    build: (f) => hs256({ alg: 'HS256', typ: 'JWT', kid: f.realKey().kid }, claims(f), f.ids.jwks().keys[0]!.x),
  },
  {
    name: 'a fully-specified Ed25519 alg: only EdDSA is pinned',
    reason: 'alg-not-allowed',
    build: (f) => signEd({ alg: 'Ed25519', typ: 'JWT', kid: f.realKey().kid }, claims(f), f.realKey().privateKey),
  },
  {
    name: 'unknown kid: signed by a key the ring never had',
    reason: 'unknown-kid',
    build(f) {
      const other = generateKeyPairSync('ed25519');
      return signEd({ alg: 'EdDSA', typ: 'JWT', kid: jwkThumbprint(other.publicKey) }, claims(f), other.privateKey);
    },
  },
  {
    name: 'unknown kid: a foreign key claiming no kid at all',
    reason: 'unknown-kid',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT' }, claims(f), generateKeyPairSync('ed25519').privateKey),
  },
  {
    name: "bad signature: a foreign key's signature under the ring's kid",
    reason: 'bad-signature',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT', kid: f.realKey().kid }, claims(f), generateKeyPairSync('ed25519').privateKey),
  },
  {
    name: "tampered payload: a real token's sub changed to sandbox B",
    reason: 'bad-signature',
    async build(f) {
      const [h, p, s] = (await f.ids.issue(A)).token.split('.') as [string, string, string];
      const body = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
      body.sub = `spiffe://${TD}/agent/${B.agent}/sandbox/${B.id}`;
      return `${h}.${b64(body)}.${s}`;
    },
    channel: B.id,
  },
  {
    name: "tampered payload: a real token's exp pushed a minute later",
    reason: 'bad-signature',
    async build(f) {
      const [h, p, s] = (await f.ids.issue(A)).token.split('.') as [string, string, string];
      const body = JSON.parse(Buffer.from(p, 'base64url').toString()) as { exp: number };
      body.exp += 60;
      return `${h}.${b64(body)}.${s}`;
    },
  },
  {
    name: "spliced: A's header and claims with B's signature",
    reason: 'bad-signature',
    async build(f) {
      const a = (await f.ids.issue(A)).token.split('.');
      const b = (await f.ids.issue(B)).token.split('.');
      return `${a[0]}.${a[1]}.${b[2]}`;
    },
  },
  { name: 'malformed: not a JWS', reason: 'malformed', build: () => 'hello' },
  { name: 'malformed: empty string', reason: 'malformed', build: () => '' },
  { name: 'malformed: two parts', reason: 'malformed', build: async (f) => (await f.ids.issue(A)).token.split('.').slice(0, 2).join('.') },
  { name: 'malformed: header is not JSON', reason: 'malformed', build: () => `${b64('not json')}.${b64({})}.AAAA` },
  { name: 'malformed: longer than 8192 characters', reason: 'malformed', build: async (f) => (await f.ids.issue(A)).token + 'A'.repeat(8192) },
  {
    name: 'malformed: claims that are not JSON, signed with the real key',
    reason: 'malformed',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT', kid: f.realKey().kid }, 'not json', f.realKey().privateKey),
  },
  {
    name: 'malformed: no jti, signed with the real key',
    reason: 'malformed',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT', kid: f.realKey().kid }, { ...claims(f), jti: undefined }, f.realKey().privateKey),
  },
  {
    name: 'malformed: exp is a string, signed with the real key',
    reason: 'malformed',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT', kid: f.realKey().kid }, claims(f, { exp: 'later' }), f.realKey().privateKey),
  },
  {
    name: 'malformed: typ is not JWT, signed with the real key',
    reason: 'malformed',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'at+jwt', kid: f.realKey().kid }, claims(f), f.realKey().privateKey),
  },
  {
    name: 'wrong issuer, signed with the real key',
    reason: 'wrong-issuer',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT', kid: f.realKey().kid }, claims(f, { iss: 'spiffe://evil.example' }), f.realKey().privateKey),
  },
  {
    name: 'wrong subject: another trust domain, signed with the real key',
    reason: 'wrong-subject',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT', kid: f.realKey().kid }, claims(f, { sub: `spiffe://evil.example/agent/${A.agent}/sandbox/${A.id}` }), f.realKey().privateKey),
  },
  {
    name: 'wrong subject: not a sandbox identity, signed with the real key',
    reason: 'wrong-subject',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT', kid: f.realKey().kid }, claims(f, { sub: 'operator' }), f.realKey().privateKey),
  },
  {
    name: 'lifetime too long: exp two hours after iat, signed with the real key',
    reason: 'lifetime-too-long',
    build: (f) => signEd({ alg: 'EdDSA', typ: 'JWT', kid: f.realKey().kid }, claims(f, { exp: f.nowSec() + 7200 }), f.realKey().privateKey),
  },
];

for (const c of refusals) {
  test(`refused (${c.reason}): ${c.name}`, async () => {
    const f = fixture();
    try {
      const token = await c.build(f);
      const r = await f.ids.verify(token, { audience: c.audience ?? LLM, channelSandboxId: c.channel ?? A.id });
      assert.equal(r.ok, false, 'must be refused');
      if (r.ok) return;
      assert.equal(r.reason, c.reason, r.message);
      assert.ok(REFUSAL_REASONS.includes(r.reason));
      assert.ok(r.message.length > 0);
      if (token.length > 20) assert.ok(!r.message.includes(token), 'the message never repeats the token');
    } finally {
      f.close();
    }
  });
}

test('every refusal reason except internal-error has a case above', () => {
  const covered = new Set(refusals.map((c) => c.reason));
  assert.deepEqual(REFUSAL_REASONS.filter((r) => !covered.has(r)), ['internal-error']);
});

test('an issued token verifies on its own channel for each of its audiences, and says who it is for', async () => {
  const f = fixture();
  try {
    const issued = await f.ids.issue(A);
    assert.match(issued.token, TOKEN_CHARS, 'fits the guest protocol token.set');
    assert.equal(issued.expiresAtMs - issued.issuedAtMs, 600_000);
    assert.equal(issued.expiresAt, new Date(issued.expiresAtMs).toISOString());
    const header = JSON.parse(Buffer.from(issued.token.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>;
    assert.deepEqual(header, { alg: 'EdDSA', typ: 'JWT', kid: f.ids.jwks().keys[0]!.kid });
    for (const audience of [LLM, MCP]) {
      const r = await f.ids.verify(issued.token, { audience, channelSandboxId: A.id });
      assert.ok(r.ok, r.ok ? '' : r.message);
      assert.deepEqual(r.claims, {
        spiffeId: `spiffe://${TD}/agent/reviewer/sandbox/${A.id}`, trustDomain: TD, agent: 'reviewer', sandboxId: A.id,
        audience: [LLM, MCP], issuer: `spiffe://${TD}`, kid: issued.kid, jti: issued.jti,
        issuedAtMs: issued.issuedAtMs, notBeforeMs: issued.issuedAtMs, expiresAtMs: issued.expiresAtMs,
      });
    }
    assert.notEqual((await f.ids.issue(A)).jti, issued.jti, 'each token has its own jti');
  } finally {
    f.close();
  }
});

test('the clock tolerance: valid 1 s before exp + 5 s, expired at exp + 5 s', async () => {
  const f = fixture();
  try {
    const issued = await f.ids.issue(A);
    f.advance(issued.expiresAtMs + 4_000 - (T0 + 250));
    assert.equal((await f.ids.verify(issued.token, { audience: LLM, channelSandboxId: A.id })).ok, true);
    f.advance(1_000);
    const r = await f.ids.verify(issued.token, { audience: LLM, channelSandboxId: A.id });
    assert.equal(r.ok ? 'ok' : r.reason, 'expired');
  } finally {
    f.close();
  }
});

test('the largest token (255-character trust domain, 63-character agent, 16 long audiences) fits token.set', async () => {
  const tmp = tempDir();
  try {
    const audiences = Array.from({ length: 16 }, (_, i) => `${i}`.padEnd(255, 'x'));
    const ids = createIdentityService({ home: tmp.path, trustDomain: 't'.repeat(255), audiences });
    const issued = await ids.issue({ id: A.id, agent: 'a'.repeat(63) });
    assert.match(issued.token, TOKEN_CHARS);
    assert.ok(issued.token.length <= 8192, `${issued.token.length} characters`);
    assert.equal((await ids.verify(issued.token, { audience: audiences[15]!, channelSandboxId: A.id })).ok, true);
  } finally {
    tmp.cleanup();
  }
});

test('rotation: a token signed before rotate() still verifies; once the old key is dropped it is unknown-kid', async () => {
  const f = fixture();
  try {
    const before = await f.ids.issue(A);
    f.advance(10_000);
    const { kid } = f.ids.rotate();
    assert.notEqual(kid, before.kid);
    const after = await f.ids.issue(A);
    assert.equal(after.kid, kid, 'new tokens use the new key');
    assert.equal((await f.ids.verify(before.token, { audience: LLM, channelSandboxId: A.id })).ok, true);
    assert.deepEqual(f.ids.jwks().keys.map((k) => k.kid), [kid, before.kid]);
    f.advance(600_000 + 5_000); // TTL + tolerance after the rotation: every token of the old key has expired
    const r = await f.ids.verify(before.token, { audience: LLM, channelSandboxId: A.id });
    assert.equal(r.ok ? 'ok' : r.reason, 'unknown-kid');
    assert.deepEqual(f.ids.jwks().keys.map((k) => k.kid), [kid]);
  } finally {
    f.close();
  }
});

test('automatic rotation after 24 h: the next token is signed by a new key', async () => {
  const f = fixture();
  try {
    const first = await f.ids.issue(A);
    f.advance(86_400_000);
    const next = await f.ids.issue(A);
    assert.notEqual(next.kid, first.kid);
    assert.equal((await f.ids.verify(next.token, { audience: LLM, channelSandboxId: A.id })).ok, true);
  } finally {
    f.close();
  }
});

test('tokens survive a restart of the service (same keys), revocations do not need to', async () => {
  const f = fixture();
  try {
    const issued = await f.ids.issue(A);
    const again = createIdentityService({ home: f.home, trustDomain: TD, audiences: [LLM, MCP], now: () => T0 + 1000 });
    assert.equal((await again.verify(issued.token, { audience: LLM, channelSandboxId: A.id })).ok, true);
  } finally {
    f.close();
  }
});

test('revoke: issuing for the sandbox is refused; the entry is dropped once its tokens have expired anyway', async () => {
  const f = fixture();
  try {
    f.ids.revoke(A.id);
    f.ids.revoke(A.id); // idempotent
    await assert.rejects(f.ids.issue(A), (err: unknown) => err instanceof IdentityError && err.code === 'identity-revoked' && /create a new sandbox/.test(err.fix ?? ''));
    assert.equal((await f.ids.issue(B)).sandboxId, B.id, 'other sandboxes are not affected');
    assert.equal(f.ids.isRevoked(A.id), true);
    f.advance(605_000);
    assert.equal(f.ids.isRevoked(A.id), false);
  } finally {
    f.close();
  }
});

const badIssues: Array<{ name: string; sandbox: { id: string; agent: string }; audience?: string | string[]; message: RegExp }> = [
  { name: 'a sandbox id of another shape', sandbox: { id: 'sandbox-1', agent: 'reviewer' }, message: /not a sandbox id/ },
  { name: 'an agent name with upper case', sandbox: { id: A.id, agent: 'Reviewer' }, message: /not an agent name/ },
  { name: 'an audience that is not configured', sandbox: A, audience: 'api.example.com', message: /not one of this deployment's/ },
  { name: 'an empty audience list', sandbox: A, audience: [], message: /audience \(none\)/ },
];
for (const c of badIssues) {
  test(`issue refuses ${c.name}`, async () => {
    const f = fixture();
    try {
      await assert.rejects(f.ids.issue(c.sandbox, c.audience), (err: unknown) => err instanceof InvalidInputError && c.message.test(err.message));
    } finally {
      f.close();
    }
  });
}

const badOptions: Array<{ name: string; opts: Record<string, unknown>; message: RegExp }> = [
  { name: 'TTL not whole seconds', opts: { ttlMs: 1500 }, message: /whole number of seconds/ },
  { name: 'TTL over an hour', opts: { ttlMs: 7_200_000 }, message: /between 1000 and 3600000/ },
  { name: 'no audiences', opts: { audiences: [] }, message: /bad token audiences/ },
  { name: 'duplicate audiences', opts: { audiences: [LLM, LLM] }, message: /unique/ },
  { name: 'an audience with a space', opts: { audiences: ['a b'] }, message: /without spaces/ },
  { name: 'a trust domain with a port', opts: { trustDomain: 'example.org:443' }, message: /not a SPIFFE trust domain/ },
  { name: 'a clock tolerance over a minute', opts: { clockToleranceMs: 120_000 }, message: /between 0 and 60000/ },
];
for (const c of badOptions) {
  test(`createIdentityService refuses ${c.name}`, () => {
    const tmp = tempDir();
    try {
      assert.throws(() => createIdentityService({ home: tmp.path, trustDomain: TD, audiences: [LLM], ...c.opts }), (err: unknown) => err instanceof InvalidInputError && c.message.test(err.message) && !!err.fix);
    } finally {
      tmp.cleanup();
    }
  });
}

test('a group-readable signing key stops the service from starting, with the chmod fix', () => {
  const f = fixture();
  try {
    const kid = f.realKey().kid;
    const path = join(f.home, 'keys', 'identity', `${kid}.json`);
    chmodSync(path, 0o640);
    assert.throws(() => createIdentityService({ home: f.home, trustDomain: TD, audiences: [LLM] }), (err: unknown) => {
      return err instanceof KeyError && err.code === 'key-permissions' && err.fix === `chmod 600 ${path}`;
    });
  } finally {
    f.close();
  }
});

test('verify never throws, whatever it is given', async () => {
  const f = fixture();
  try {
    for (const junk of [undefined, null, 42, {}, ['a.b.c']]) {
      const r = await f.ids.verify(junk as unknown as string, { audience: LLM, channelSandboxId: A.id });
      assert.equal(r.ok ? 'ok' : r.reason, 'malformed');
    }
  } finally {
    f.close();
  }
});
