/**
 * Smoke test of the identity benchmark on a small run (the full run is
 * `cordon bench identity`): the figures have the documented shape, and every
 * timed call did what its row claims — issued tokens carry an Ed25519
 * signature that the published key checks (verified here with node:crypto,
 * not with the service), accepted verifies name the channel's sandbox, and
 * each refusal row really got its refusal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, verify } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VerifyResult } from '../identity/index.js';
import { benchIdentity, benchSandboxId, formatIdentityText, IDENTITY_ROWS, type IdentityRow } from './identity.js';

interface Call { token: string; tokenSandboxId: string; channelSandboxId?: string; result?: VerifyResult }

test('benchIdentity: every row measured, every answer what its row claims, nothing left behind', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-bench-'));
  try {
    const calls = new Map<IdentityRow, Call[]>(IDENTITY_ROWS.map((r) => [r, []]));
    const r = await benchIdentity({ dir, tokens: 60, sandboxes: 4, warmup: 5, observe: (row, call) => calls.get(row)!.push(call) });

    for (const row of IDENTITY_ROWS) {
      const f = r.cordon[row];
      assert.equal(f.ops, 60, row);
      assert.equal(calls.get(row)!.length, 60, `${row}: every timed call was observed`);
      assert.ok(f.p50Us > 0 && f.p50Us <= f.p99Us && Number.isFinite(f.p99Us), `${row}: p50 ${f.p50Us} ≤ p99 ${f.p99Us}`);
      assert.ok(f.cpuUsPerOp > 0 && f.opsPerSec > 0, `${row}: CPU and rate`);
    }
    assert.deepEqual(r.cordon.outcomes, {
      verifyValid: { ok: 60 }, verifyWrongChannel: { 'wrong-channel': 60 }, verifyRevoked: { revoked: 60 }, verifyExpired: { expired: 60 },
    });

    // Issued tokens are EdDSA JWTs whose signature the reported Ed25519 key checks, and a changed byte does not.
    assert.equal(r.setup.key.crv, 'Ed25519');
    const pub = createPublicKey({ key: { ...r.setup.key }, format: 'jwk' });
    const sandboxes = new Set<string>();
    for (const { token, tokenSandboxId } of calls.get('issue')!) {
      const [h, p, s] = token.split('.') as [string, string, string];
      const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as { alg: string; kid: string };
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as { sub: string };
      assert.deepEqual([header.alg, header.kid], ['EdDSA', r.setup.key.kid]);
      assert.ok(claims.sub.endsWith(`/sandbox/${tokenSandboxId}`), claims.sub);
      assert.ok(verify(null, Buffer.from(`${h}.${p}`), pub, Buffer.from(s, 'base64url')), 'the signature checks');
      assert.ok(!verify(null, Buffer.from(`${h}.${p}x`), pub, Buffer.from(s, 'base64url')), 'a changed payload does not');
      sandboxes.add(tokenSandboxId);
    }
    assert.equal(sandboxes.size, 4, 'tokens spread over every sandbox');

    for (const c of calls.get('verifyValid')!) {
      assert.ok(c.result?.ok, 'accepted');
      if (c.result?.ok) assert.equal(c.result.claims.sandboxId, c.channelSandboxId);
    }
    const refusals: Array<[IdentityRow, string, (c: Call) => boolean]> = [
      ['verifyWrongChannel', 'wrong-channel', (c) => c.channelSandboxId !== c.tokenSandboxId],
      ['verifyRevoked', 'revoked', (c) => c.channelSandboxId === c.tokenSandboxId],
      ['verifyExpired', 'expired', (c) => c.channelSandboxId === c.tokenSandboxId],
    ];
    for (const [row, reason, channelOk] of refusals) {
      for (const c of calls.get(row)!) {
        assert.equal(c.result?.ok, false, `${row}: refused`);
        assert.equal(c.result?.ok === false && c.result.reason, reason, row);
        assert.ok(channelOk(c), `${row}: presented on the intended channel`);
      }
    }

    const text = formatIdentityText(r);
    assert.match(text, /verify: refused, wrong channel/);
    assert.match(text, /EdDSA \(Ed25519\)/);
    assert.match(text, /peers: none/);
    assert.deepEqual(readdirSync(dir), [], 'the throw-away key ring is removed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('benchSandboxId gives distinct, valid sandbox ids', () => {
  const ids = [0, 1, 31, 32, 1023, 1024, 2 ** 40].map(benchSandboxId);
  assert.equal(new Set(ids).size, ids.length);
  for (const id of ids) assert.match(id, /^sb-[a-z2-7]{20}$/);
});

test('benchIdentity refuses a run with one sandbox (no other channel to present a token on)', async () => {
  await assert.rejects(benchIdentity({ dir: tmpdir(), tokens: 1, sandboxes: 1 }), /sandboxes 1 must be ≥ 2/);
});
