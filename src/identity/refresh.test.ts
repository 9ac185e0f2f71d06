/**
 * Token refresh tests on a mocked clock (setTimeout and Date): the first token
 * at once, the next at 2/3 of the lifetime, retries with exponential backoff,
 * a report when the guest's token expires with no replacement (also when a
 * delivery hangs), and stopping by stop(), revoke() and close(). Signing stays
 * real (async), so each step waits for the refresher's own work to finish.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { tempDir } from '../testkit/index.js';
import { createIdentityService, IdentityError, type IdentityService, type IssuedToken, type RefreshFailure } from './index.js';

const LLM = 'llm.cordon.internal';
const A = { id: 'sb-aaaaaaaaaaaaaaaaaaaa', agent: 'reviewer' };
const T0 = 1_700_000_000_000;
const TTL = 600_000;

/** Wait (in real time, at most 5 s) until `cond` holds: the refresher signs asynchronously. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const start = performance.now();
  while (!cond()) {
    if (performance.now() - start > 5000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

function setup(t: TestContext): { ids: IdentityService; tick: (ms: number) => void; done: () => void } {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  const tmp = tempDir();
  const ids = createIdentityService({ home: tmp.path, trustDomain: 'agents.example.org', audiences: [LLM] });
  return {
    ids,
    tick: (ms) => t.mock.timers.tick(ms),
    done() {
      ids.close();
      tmp.cleanup();
    },
  };
}

test('the first token is delivered at once and the next one at 2/3 of its lifetime, until stopped', async (t) => {
  const s = setup(t);
  try {
    const delivered: IssuedToken[] = [];
    const r = s.ids.startRefresh(A, async (token, issued) => {
      assert.equal(token, issued.token);
      delivered.push(issued);
    });
    const first = await r.first;
    assert.equal(first.issuedAtMs, T0);
    assert.equal(first.expiresAtMs, T0 + TTL);
    assert.equal(r.current(), first);

    s.tick(TTL * 2 / 3 - 1);
    assert.equal(delivered.length, 1, 'not before 2/3 of the lifetime');
    s.tick(1);
    await until(() => delivered.length === 2, 'the second delivery');
    const second = delivered[1]!;
    assert.equal(second.issuedAtMs, T0 + 400_000);
    assert.ok(second.expiresAtMs > first.expiresAtMs);
    assert.equal((await s.ids.verify(second.token, { audience: LLM, channelSandboxId: A.id })).ok, true);

    s.tick(400_000);
    await until(() => delivered.length === 3, 'the third delivery');
    r.stop();
    assert.equal(r.stopped, true);
    s.tick(3 * TTL);
    await new Promise((res) => setImmediate(res));
    assert.equal(delivered.length, 3, 'nothing after stop()');
  } finally {
    s.done();
  }
});

test('a failed delivery is reported and retried with exponential backoff (1 s, 2 s, …)', async (t) => {
  const s = setup(t);
  try {
    const failures: RefreshFailure[] = [];
    let calls = 0;
    const r = s.ids.startRefresh(A, async () => {
      calls++;
      if (calls <= 2) throw new Error(`guest refused (${calls})`);
    }, { onFailure: (f) => failures.push(f) });
    await assert.rejects(r.first, /guest refused \(1\)/, 'first settles with the first attempt');
    assert.deepEqual(failures.map((f) => [f.reason, f.failures, f.retryInMs]), [['delivery-failed', 1, 1000]]);
    s.tick(999);
    assert.equal(calls, 1);
    s.tick(1);
    await until(() => failures.length === 2, 'the second failure');
    assert.deepEqual([failures[1]!.failures, failures[1]!.retryInMs], [2, 2000]);
    s.tick(2000);
    await until(() => r.current() !== undefined, 'the successful delivery');
    assert.equal(calls, 3);
    assert.equal(r.current()!.issuedAtMs, T0 + 3000);
    assert.equal(failures.length, 2);
  } finally {
    s.done();
  }
});

test('when every delivery fails, the backoff stops at 30 s and the expiry of the guest token is reported once', async (t) => {
  const s = setup(t);
  try {
    const failures: RefreshFailure[] = [];
    let calls = 0;
    const r = s.ids.startRefresh(A, async () => {
      if (++calls > 1) throw new Error('channel closed');
    }, { onFailure: (f) => failures.push(f) });
    const first = await r.first;
    s.tick(400_000);
    await until(() => failures.length === 1, 'the first failure');
    while (Date.now() < first.expiresAtMs + 60_000) {
      const n = failures.filter((f) => f.reason === 'delivery-failed').length;
      s.tick(failures.at(-1)?.retryInMs ?? 30_000);
      await until(() => failures.filter((f) => f.reason === 'delivery-failed').length === n + 1, `failure ${n + 1}`);
    }
    const delays = failures.filter((f) => f.reason === 'delivery-failed').map((f) => f.retryInMs);
    assert.deepEqual(delays.slice(0, 7), [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    const expired = failures.filter((f) => f.reason === 'token-expired');
    assert.equal(expired.length, 1, 'reported once');
    assert.equal(expired[0]!.expiredAtMs, first.expiresAtMs);
    assert.equal(expired[0]!.sandboxId, A.id);
    assert.equal(r.current(), first, 'the last delivered token is still the old one');
  } finally {
    s.done();
  }
});

test('a hanging delivery is not raced by another, and the expiry is still reported', async (t) => {
  const s = setup(t);
  try {
    const failures: RefreshFailure[] = [];
    let calls = 0;
    const r = s.ids.startRefresh(A, () => (++calls === 1 ? Promise.resolve() : new Promise<void>(() => undefined)), {
      onFailure: (f) => failures.push(f),
    });
    const first = await r.first;
    s.tick(400_000);
    await until(() => calls === 2, 'the second (hanging) delivery');
    s.tick(first.expiresAtMs - Date.now() - 1);
    assert.equal(failures.length, 0);
    s.tick(1);
    assert.deepEqual(failures.map((f) => f.reason), ['token-expired']);
    s.tick(TTL);
    assert.equal(calls, 2, 'deliveries are serialised');
  } finally {
    s.done();
  }
});

test('revoke() stops the refresher, and a revoked sandbox gets no refresher at all', async (t) => {
  const s = setup(t);
  try {
    let calls = 0;
    const r = s.ids.startRefresh(A, async () => void calls++);
    await r.first;
    s.ids.revoke(A.id);
    assert.equal(r.stopped, true);
    s.tick(TTL);
    assert.equal(calls, 1);

    const failures: RefreshFailure[] = [];
    const again = s.ids.startRefresh(A, async () => void calls++, { onFailure: (f) => failures.push(f) });
    await assert.rejects(again.first, (err: unknown) => err instanceof IdentityError && err.code === 'identity-revoked');
    assert.equal(again.stopped, true);
    assert.deepEqual(failures.map((f) => [f.reason, f.retryInMs]), [['issue-failed', undefined]]);
    assert.equal(calls, 1);
  } finally {
    s.done();
  }
});

test('stop() before the first delivery rejects first; close() stops every refresher', async (t) => {
  const s = setup(t);
  try {
    const hanging = s.ids.startRefresh(A, () => new Promise<void>(() => undefined));
    hanging.stop();
    await assert.rejects(hanging.first, (err: unknown) => err instanceof IdentityError && err.code === 'identity-refresh-stopped');

    const B = { id: 'sb-bbbbbbbbbbbbbbbbbbbb', agent: 'reviewer' };
    const rb = s.ids.startRefresh(B, async () => undefined);
    await rb.first;
    s.ids.close();
    assert.equal(rb.stopped, true);
  } finally {
    s.done();
  }
});
