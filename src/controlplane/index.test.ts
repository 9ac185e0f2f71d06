/**
 * The control plane over real HTTP on loopback: token file, one daemon per
 * home, every request audited, a shutdown checkpoint that seals the log.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startControlPlane, acquireHomeLock, keyDir } from './index.js';
import { request } from 'node:http';
import { defaultConfig, parseConfig } from '../config/index.js';
import { verifyAudit } from '../audit/index.js';
import { openStore } from '../store/index.js';
import { EnvironmentError } from '../errors/index.js';
import { tempDir } from '../testkit/index.js';

test('cordon up: token 0600, audited requests, second daemon refused, sealed on stop', async () => {
  const d = tempDir();
  try {
    const cp = await startControlPlane({ home: d.path, config: defaultConfig(), port: 0 });
    const firstCaPem = cp.egress.caCertPem;
    let stopped = false;
    try {
      assert.match(cp.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(cp.operatorToken.created, true);
      assert.equal(statSync(cp.operatorToken.path).mode & 0o777, 0o600);
      assert.equal(statSync(join(d.path, 'keys', 'audit-ed25519.key')).mode & 0o777, 0o600);
      assert.equal(statSync(join(d.path, 'keys', 'egress-ca.key')).mode & 0o777, 0o600, 'the egress CA key is private');
      assert.equal(cp.egress.caCertPem, readFileSync(join(d.path, 'keys', 'egress-ca.crt'), 'utf8'), 'the proxy hands guests the stored CA');

      await assert.rejects(startControlPlane({ home: d.path, config: defaultConfig(), port: 0 }), (err: unknown) => {
        assert.ok(err instanceof EnvironmentError);
        assert.equal(err.code, 'env-already-running');
        assert.match(err.fix ?? '', /kill \d+/);
        return true;
      });

      const anon = await fetch(cp.url + '/v1/health');
      assert.equal(anon.status, 401);
      const res = await fetch(cp.url + '/v1/health', { headers: { authorization: `Bearer ${cp.operatorToken.token}` } });
      assert.equal(res.status, 200);
      const health = (await res.json()) as { status: string; store: string; auditHead: number };
      assert.equal(health.status, 'ok');
      assert.equal(health.store, 'sqlite');
      assert.ok(health.auditHead >= 3, `daemon.start, api.auth and api.request are logged (head ${health.auditHead})`);
      await cp.stop();
      stopped = true;
    } finally {
      if (!stopped) await cp.stop();
    }

    const store = await openStore({ kind: 'sqlite', path: join(d.path, 'cordon.db') });
    try {
      const report = await verifyAudit(store, { keyDir: keyDir(d.path) });
      assert.equal(report.ok, true, report.message);
      assert.equal(report.unsealedEvents ?? 0, 0, 'the shutdown checkpoint covers every event');
      const types = (await store.audit.query({ limit: 100, order: 'asc' })).map((e) => e.type);
      assert.deepEqual(types, ['daemon.start', 'api.auth', 'api.request', 'daemon.stop']);
    } finally {
      await store.close();
    }

    // A restart continues the same chain with the same token.
    const cp2 = await startControlPlane({ home: d.path, config: defaultConfig(), port: 0 });
    assert.equal(cp2.operatorToken.created, false);
    assert.equal(cp2.egress.caCertPem, firstCaPem, 'guests keep trusting the same CA');
    await cp2.stop();
  } finally {
    d.cleanup();
  }
});

test('a stale lock left by a dead process is taken over', () => {
  const d = tempDir();
  try {
    writeFileSync(join(d.path, 'cordon.lock'), '999999999');
    const lock = acquireHomeLock(d.path);
    lock.release();
  } finally {
    d.cleanup();
  }
});

test('a port already in use gives a clear error and releases the lock', async () => {
  const d = tempDir();
  const first = await startControlPlane({ home: d.path + '/a', config: defaultConfig(), port: 0 });
  try {
    const port = Number(new URL(first.url).port);
    await assert.rejects(startControlPlane({ home: d.path + '/b', config: defaultConfig(), port }), (err: unknown) => {
      assert.ok(err instanceof EnvironmentError);
      assert.equal(err.code, 'env-port-in-use');
      assert.match(err.fix ?? '', /server\.port|--port/);
      return true;
    });
    // The failed start left no lock behind.
    acquireHomeLock(d.path + '/b').release();
  } finally {
    await first.stop();
    d.cleanup();
  }
});

test('cordon.yaml egress.limits reach every door: a request rate of 1 in a burst of 1 lets one request through and refuses the next with 429; an agent\'s egressLimits are laid over them field by field', async () => {
  const d = tempDir();
  const { createServer } = await import('node:http');
  const upstream = createServer((_req, res) => { res.end('ok'); }).listen(0, '127.0.0.1');
  await new Promise((r) => upstream.once('listening', r));
  const port = (upstream.address() as import('node:net').AddressInfo).port;
  try {
    const egress = [{ host: 'ok.example', ports: [port] }, { cidr: '127.0.0.1/32', ports: [port] }];
    const config = parseConfig(JSON.stringify({
      version: 1,
      agents: { dev: { egress }, crawler: { egress, egressLimits: { requestBurst: 3 } } },
      egress: { limits: { maxRequestsPerSecond: 0.001, requestBurst: 1 } },
    }));
    const cp = await startControlPlane({ home: d.path, config, port: 0, egressLookup: async () => [{ address: '127.0.0.1', family: 4 }] });
    try {
      const get = (doorPort: number): Promise<{ status: number; reason: string | undefined }> => new Promise((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: doorPort, path: `http://ok.example:${port}/`, headers: { host: `ok.example:${port}` } }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: res.headers['x-cordon-error'] as string | undefined }));
        });
        req.on('error', reject);
        req.end();
      });
      const door = cp.egress.openDoor({ sandboxId: 'sb-limits', agent: 'dev', agentConfig: config.agents.dev!, audit: cp.audit });
      const { port: doorPort } = await door.listen(0, '127.0.0.1');
      assert.deepEqual(await get(doorPort), { status: 200, reason: undefined });
      assert.deepEqual(await get(doorPort), { status: 429, reason: 'request-rate-limit' }, 'the second request is over the configured rate');
      // The crawler's door, opened as the sandbox manager opens it: its burst of 3, egress.limits' rate (not the default 100 a second).
      const crawler = cp.egress.openDoor({ sandboxId: 'sb-crawler', agent: 'crawler', agentConfig: config.agents.crawler!, audit: cp.audit, limits: config.agents.crawler!.egressLimits });
      const { port: crawlerPort } = await crawler.listen(0, '127.0.0.1');
      const answers: string[] = [];
      for (let i = 0; i < 4; i++) answers.push(Object.values(await get(crawlerPort)).join(' '));
      assert.deepEqual(answers, ['200 ', '200 ', '200 ', '429 request-rate-limit']);
    } finally {
      await cp.stop();
    }
  } finally {
    upstream.close();
    d.cleanup();
  }
});
