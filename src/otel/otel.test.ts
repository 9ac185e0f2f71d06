/**
 * OTLP export of audit events, against a loopback collector that parses the
 * OTLP/HTTP JSON it receives: the encoding, batching, headers, and what
 * happens when the collector is slow, refuses or is absent (bounded queue,
 * oldest dropped, drops counted and audited, appends never held up).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { AuditLog } from '../audit/index.js';
import { openStore } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { sleep } from '../util/index.js';
import { createOtlpLogExporter, logsUrl, startAuditExport, telemetryOptionsSchema, toLogRecord, unixNano, type OtlpLogsRequest } from './index.js';

/** A collector on loopback: records each request's path, headers and parsed body; answers by `answer(n)`. */
async function collector(answer: (n: number) => number | 'hang' = () => 200) {
  const requests: { path: string; headers: Record<string, string | string[] | undefined>; body: OtlpLogsRequest }[] = [];
  const hung: ServerResponse[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({ path: req.url ?? '', headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpLogsRequest });
      const a = answer(requests.length);
      if (a === 'hang') hung.push(res);
      else res.writeHead(a, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    records: () => requests.flatMap((r) => r.body.resourceLogs.flatMap((rl) => rl.scopeLogs.flatMap((s) => s.logRecords))),
    close: () => new Promise<void>((r) => { for (const res of hung) res.destroy(); server.closeAllConnections(); server.close(() => r()); }),
  };
}

async function withLog(body: (audit: AuditLog, store: Awaited<ReturnType<typeof openStore>>) => Promise<void>): Promise<void> {
  const dir = tempDir('cordon-otel-');
  const store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
  const audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys'), checkpointIntervalMs: 60_000 });
  try {
    await body(audit, store);
  } finally {
    await audit.close();
    await store.close();
    dir.cleanup();
  }
}

async function until<T>(f: () => T | undefined | Promise<T | undefined>, ms = 5000): Promise<T | undefined> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await f();
    if (v !== undefined) return v;
    await sleep(20);
  }
  return undefined;
}

const attr = (r: { attributes: { key: string; value: Record<string, unknown> }[] }, key: string) => r.attributes.find((a) => a.key === key)?.value;

test('audit events reach the collector as OTLP JSON logs, in batches, with the configured headers', async () => {
  const c = await collector();
  try {
    await withLog(async (audit, store) => {
      const exp = await startAuditExport({ store, audit, pollIntervalMs: 20, options: { endpoint: c.endpoint, headers: { 'x-api-key': 'k-123' }, maxBatch: 3, flushIntervalMs: 50 } });
      try {
        for (let i = 0; i < 7; i++) {
          await audit.append({ type: i === 3 ? 'egress.request' : 'sandbox.exec', actor: 'agent:coder', agent: 'coder', sandbox: 'sb-1', decision: i === 3 ? 'deny' : 'allow', reason: i === 3 ? 'host-not-allowed' : 'ok', data: { i } });
        }
        assert.ok(await until(() => (c.records().length >= 7 ? true : undefined)), 'all 7 events arrive');
      } finally {
        await exp.stop();
      }
      const records = c.records();
      assert.ok(c.requests.every((r) => r.path === '/v1/logs'), 'posted to /v1/logs');
      assert.ok(c.requests.every((r) => r.headers['x-api-key'] === 'k-123' && r.headers['content-type'] === 'application/json'));
      assert.ok(c.requests.every((r) => r.body.resourceLogs[0]!.scopeLogs[0]!.logRecords.length <= 3), 'no batch above maxBatch');
      assert.deepEqual(c.requests[0]!.body.resourceLogs[0]!.resource.attributes, [{ key: 'service.name', value: { stringValue: 'cordon' } }]);
      assert.equal(c.requests[0]!.body.resourceLogs[0]!.scopeLogs[0]!.scope.name, 'cordon.audit');
      const events = await audit.query({ limit: 100, order: 'asc' } as Parameters<typeof audit.query>[0]);
      const bySeq = new Map(events.map((e) => [e.seq, e]));
      const seqs = records.map((r) => Number((attr(r, 'cordon.event.seq') as { intValue: string }).intValue));
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'in log order');
      for (const r of records) {
        const e = bySeq.get(Number((attr(r, 'cordon.event.seq') as { intValue: string }).intValue))!;
        assert.ok(e, 'each record is an event of the log');
        assert.equal(r.body.stringValue, e.type);
        assert.match(r.timeUnixNano, /^\d+$/);
        assert.equal(r.timeUnixNano, `${Date.parse(e.ts)}000000`);
        assert.deepEqual(attr(r, 'cordon.event.hash'), { stringValue: e.hash });
        assert.deepEqual(JSON.parse((attr(r, 'cordon.event.data') as { stringValue: string }).stringValue), e.data);
      }
      const denied = records.find((r) => (attr(r, 'cordon.decision') as { stringValue: string } | undefined)?.stringValue === 'deny')!;
      assert.equal(denied.severityText, 'WARN');
      assert.equal(denied.severityNumber, 13);
    });
  } finally {
    await c.close();
  }
});

test('a collector that hangs: appends are not held up, the oldest events are dropped, drops are counted and audited', async () => {
  const c = await collector(() => 'hang');
  try {
    await withLog(async (audit, store) => {
      const exp = await startAuditExport({
        store, audit, pollIntervalMs: 10, droppedReportMs: 50,
        options: { endpoint: c.endpoint, maxBatch: 2, maxQueue: 5, flushIntervalMs: 20, timeoutMs: 400, retries: 0 },
      });
      try {
        const started = Date.now();
        for (let i = 0; i < 30; i++) {
          await audit.append({ type: 'sandbox.exec', actor: 'agent:coder', agent: 'coder', data: { i } });
          if (i % 5 === 4) await sleep(30); // let the follower read while the first export hangs
        }
        assert.ok(Date.now() - started < 3000, `30 appends took ${Date.now() - started} ms with a hanging collector`);
        const report = await until(async () => (await audit.query({ limit: 1000 })).find((e) => e.type === 'telemetry.dropped'));
        assert.ok(report, 'the drops are audited');
        assert.equal(report.reason, 'queue-full');
        assert.ok(Number(report.data.queueFull) > 0);
        assert.equal(report.data.endpoint, new URL(c.endpoint).host);
        const s = exp.exporter.stats();
        assert.ok(s.queued <= 5, `queue bounded (${s.queued})`);
        assert.ok(s.dropped.queueFull >= 30 - 5 - 2, `dropped ${s.dropped.queueFull}`);
      } finally {
        await exp.stop();
      }
    });
  } finally {
    await c.close();
  }
});

test('export failures: 5xx is retried, 400 is not; a batch that still fails is dropped and counted', async (t) => {
  for (const tc of [
    { name: '503 then 200: delivered on retry', answer: (n: number) => (n === 1 ? 503 : 200), requests: 2, exported: 2, failed: 0 },
    { name: '400: not retried, dropped', answer: () => 400, requests: 1, exported: 0, failed: 2 },
    { name: '500 every time: retried, then dropped', answer: () => 500, requests: 3, exported: 0, failed: 2 },
  ]) {
    await t.test(tc.name, async () => {
      const c = await collector(tc.answer);
      const drops: number[] = [];
      const exp = createOtlpLogExporter({ options: { endpoint: `${c.endpoint}/v1/logs`, retries: 2, maxBatch: 10, flushIntervalMs: 60_000 }, retryDelayMs: 10, droppedReportMs: 0, onDropped: (r) => drops.push(r.exportFailed) });
      try {
        for (let seq = 1; seq <= 2; seq++) exp.enqueue({ seq, ts: new Date().toISOString(), type: 'sandbox.exec', actor: 'system', data: {}, prevHash: '', hash: `h${seq}` });
        await exp.flush();
        await exp.close();
        assert.equal(c.requests.length, tc.requests);
        assert.equal(exp.stats().exported, tc.exported);
        assert.equal(exp.stats().dropped.exportFailed, tc.failed);
        assert.deepEqual(drops, tc.failed ? [tc.failed] : []);
        assert.ok(c.requests.every((r) => r.path === '/v1/logs'), 'an endpoint already ending in /v1/logs is kept');
      } finally {
        await c.close();
      }
    });
  }
});

test('encoding and settings: nanosecond times, severities, logs URL, config validation', async (t) => {
  await t.test('unixNano is exact', () => assert.equal(unixNano('2026-11-27T05:00:00.123Z'), '1795755600123000000'));
  await t.test('unreadable time is 0', () => assert.equal(unixNano('yesterday'), '0'));
  const base = { seq: 1, ts: '2026-01-01T00:00:00.000Z', actor: 'system', data: {}, prevHash: '', hash: 'h' };
  for (const [name, e, severity] of [
    ['allowed action is INFO', { ...base, type: 'sandbox.exec', decision: 'allow' }, 'INFO'],
    ['denial is WARN', { ...base, type: 'egress.request', decision: 'deny' }, 'WARN'],
    ['alert is WARN', { ...base, type: 'detect.alert' }, 'WARN'],
    ['failure is ERROR', { ...base, type: 'detect.notify-failed', decision: 'error' }, 'ERROR'],
  ] as const) await t.test(name, () => assert.equal(toLogRecord(e).severityText, severity));
  await t.test('logsUrl appends /v1/logs once', () => {
    assert.equal(logsUrl('http://c:4318'), 'http://c:4318/v1/logs');
    assert.equal(logsUrl('http://c:4318/'), 'http://c:4318/v1/logs');
    assert.equal(logsUrl('http://c:4318/v1/logs'), 'http://c:4318/v1/logs');
  });
  await t.test('off by default', () => assert.equal(telemetryOptionsSchema.parse({}).otlp, undefined));
  for (const [name, input] of [
    ['not a URL', { otlp: { endpoint: 'collector:4318' } }],
    ['not http', { otlp: { endpoint: 'ftp://c/' } }],
    ['header with a newline', { otlp: { endpoint: 'http://c', headers: { 'x-k': 'a\r\nb' } } }],
    ['unknown field', { otlp: { endpoint: 'http://c', batchSize: 3 } }],
    ['zero queue', { otlp: { endpoint: 'http://c', maxQueue: 0 } }],
  ] as const) await t.test(`refused: ${name}`, () => assert.equal(telemetryOptionsSchema.safeParse(input).success, false));
});

test('shutdown with a collector that hangs is bounded: no retries once closing, the rest is dropped and reported', async () => {
  const c = await collector(() => 'hang');
  const reports: { exportFailed: number; problem?: string }[] = [];
  const exp = createOtlpLogExporter({
    options: { endpoint: c.endpoint, maxBatch: 2, timeoutMs: 300, retries: 2, flushIntervalMs: 60_000 }, retryDelayMs: 10, droppedReportMs: 0,
    onDropped: (r) => reports.push(r),
  });
  try {
    for (let seq = 1; seq <= 10; seq++) exp.enqueue({ seq, ts: new Date().toISOString(), type: 'sandbox.exec', actor: 'system', data: {}, prevHash: '', hash: `h${seq}` });
    const started = Date.now();
    await exp.close();
    const tookMs = Date.now() - started;
    assert.ok(tookMs < 2500, `close took ${tookMs} ms (five batches with retries would take about 4.5 s)`);
    assert.equal(exp.stats().dropped.exportFailed, 10);
    assert.equal(exp.stats().exported, 0);
    assert.equal(reports.reduce((n, r) => n + r.exportFailed, 0), 10, 'every dropped event is reported');
    assert.match(String(reports[0]?.problem), /timeout|aborted/i, 'the report names the collector problem');
  } finally {
    await c.close();
  }
});
