/**
 * Reflected secrets through the real egress proxy over loopback: a sandbox
 * whose agent binds `demo` to `api.test`'s `authorization` sends its
 * placeholder; the proxy swaps in the real value; the upstream echoes it back
 * (JSON with content-length, chunked in small pieces so that values are
 * split, in headers, and in base64/hex/percent forms). The guest-side client
 * must see no form of the real value, the body must stay well framed, and
 * each reflection must be reported by name (the router's `onReflected`, wired
 * to the audit sink as the sandbox manager does, and `egress.close`'s
 * `responseHook`), never with the value. A gzip response is decoded and
 * scrubbed; one in an encoding cordon does not decode is refused.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { Transform } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { gzipSync } from 'node:zlib';
import { parseConfig } from '../config/index.js';
import { createEgressCa, createEgressProxy, issueCertificate, type EgressAuditSink, type EgressProxy } from '../egress/index.js';
import { sleep } from '../util/index.js';
import { createSandboxSecrets, createSecretsRouter, SecretValue, type SandboxSecrets } from './index.js';

const REAL = 'rt-canary-Zq8xV3mK9pL2wB7nR4tY';
const SANDBOX = 'sb-reflect';
type AuditEvent = Parameters<EgressAuditSink['append']>[0];

let upstream: HttpsServer;
let upstreamPort: number;
let plain: HttpServer;
let plainPort: number;
let proxy: EgressProxy;
let doorPort: number;
let secrets: SandboxSecrets;
const audited: AuditEvent[] = [];
const acceptEncodings: string[] = [];

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const hex = (s: string): string => Buffer.from(s).toString('hex');
const pct = (s: string): string => [...Buffer.from(s)].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
/** Every form the guest must not get. */
const FORMS = [REAL, b64(REAL), b64(`u:${REAL}`).slice(4, 30), hex(REAL), hex(REAL).toUpperCase(), pct(REAL), encodeURIComponent(REAL)];

function token(req: IncomingMessage): string {
  return String(req.headers.authorization ?? '').replace(/^Bearer /, '');
}

/** The echoing upstream. */
function echo(req: IncomingMessage, res: ServerResponse): void {
  acceptEncodings.push(String(req.headers['accept-encoding'] ?? ''));
  req.resume();
  const t = token(req);
  if (req.url === '/echo-headers') {
    res.setHeader('x-echo-auth', `Bearer ${t}`);
    res.setHeader('location', `/back?t=${encodeURIComponent(t)}`);
    return void res.end(JSON.stringify({ headers: req.headers }));
  }
  if (req.url === '/echo-chunked') {
    // Small writes, flushed one by one: the value arrives split across chunks.
    const text = JSON.stringify({ raw: t, b64: b64(t), basic: b64(`u:${t}`), hex: hex(t), HEX: hex(t).toUpperCase(), pct: pct(t), near: t.slice(0, -1) });
    res.writeHead(200, { 'content-type': 'application/json' });
    let i = 0;
    const step = (): void => {
      if (i >= text.length) return void res.end();
      res.write(text.slice(i, i + 7));
      i += 7;
      setTimeout(step, 1);
    };
    return step();
  }
  if (req.url === '/gzip') {
    const packed = gzipSync(`token ${t}`);
    res.writeHead(200, { 'content-encoding': 'gzip', 'content-type': 'text/plain', 'content-length': String(packed.length) });
    return void res.end(packed);
  }
  if (req.url === '/echo-status') {
    res.writeHead(200, `echo ${t}`, { 'content-type': 'text/plain' });
    return void res.end('ok');
  }
  if (req.url === '/echo-encoding') {
    res.writeHead(200, { 'content-encoding': t, 'content-type': 'text/plain' });
    return void res.end('x');
  }
  if (req.url === '/zstd') {
    res.writeHead(200, { 'content-encoding': 'zstd', 'content-type': 'text/plain' });
    return void res.end(Buffer.from(`pretend-zstd ${t}`));
  }
  res.end('plain');
}

before(async () => {
  const ca = createEgressCa({ commonName: 'reflect test egress CA' });
  const upstreamCa = createEgressCa({ commonName: 'reflect test roots' });
  const leaf = issueCertificate(upstreamCa, { hosts: ['api.test'] });
  upstream = createHttpsServer({ cert: leaf.certPem, key: leaf.keyPem }, echo);
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upstreamPort = (upstream.address() as AddressInfo).port;
  plain = createHttpServer(echo);
  plain.listen(0, '127.0.0.1');
  await once(plain, 'listening');
  plainPort = (plain.address() as AddressInfo).port;
  const config = parseConfig(`
version: 1
agents:
  holder:
    env: { DEMO: "{{secret.demo}}" }
    egress:
      - host: api.test
        ports: [${upstreamPort}, ${plainPort}]
        secrets: { authorization: "Bearer {{secret.demo}}" }
      - cidr: 127.0.0.1/32
        ports: [${upstreamPort}, ${plainPort}]
secrets:
  demo: { from: env, name: DEMO }
`);
  const agent = config.agents.holder!;
  secrets = createSandboxSecrets({ agentName: 'holder', agent, values: new Map([['demo', new SecretValue('demo', Buffer.from(REAL))]]) });
  const router = createSecretsRouter();
  const sink: EgressAuditSink = { append: async (e) => { audited.push(JSON.parse(JSON.stringify(e)) as AuditEvent); } };
  // As the sandbox manager wires it: one `secret.reflected` event per report.
  router.register(SANDBOX, secrets, {
    onReflected: (r, request) => void sink.append({
      type: 'secret.reflected', actor: 'agent:holder', agent: 'holder', sandbox: SANDBOX, decision: 'allow', reason: 'secret-reflected',
      data: { secret: r.secret, form: r.form, count: r.count, where: r.where, host: request.host, port: request.port },
    }),
  });
  proxy = createEgressProxy({
    lookup: async () => [{ address: '127.0.0.1', family: 4 }], ca, upstreamCa: upstreamCa.certPem,
    requestHook: router.requestHook, connectHook: router.connectHook, auditScrub: router.scrubAudit,
  });
  const door = proxy.openDoor({ sandboxId: SANDBOX, agent: 'holder', agentConfig: { ...agent, interceptAll: true }, audit: sink });
  doorPort = (await door.listen(0, '127.0.0.1')).port;
  caPem = ca.certPem;
});

let caPem: string;

after(async () => {
  await proxy.close();
  for (const srv of [upstream, plain]) {
    srv.close();
    srv.closeAllConnections();
  }
});

interface Got { status: number; headers: Record<string, string | string[] | undefined>; body: string; raw: string }

/** The guest's client: CONNECT through the door, TLS trusting only the egress CA, one request with the placeholder. */
async function guestGet(path: string, headers: Record<string, string> = {}): Promise<Got> {
  const socket = netConnect({ port: doorPort, host: '127.0.0.1' });
  socket.write(`CONNECT api.test:${upstreamPort} HTTP/1.1\r\nHost: api.test:${upstreamPort}\r\n\r\n`);
  let head = Buffer.alloc(0);
  while (!head.includes('\r\n\r\n')) head = Buffer.concat([head, (await once(socket, 'data'))[0] as Buffer]);
  assert.match(head.toString(), /^HTTP\/1\.1 200/, 'the CONNECT is allowed');
  const tls = tlsConnect({ socket, servername: 'api.test', ca: caPem, ALPNProtocols: ['http/1.1'] });
  await once(tls, 'secureConnect');
  let raw = '';
  tls.on('data', (d: Buffer) => (raw += d.toString('latin1')));
  const placeholder = secrets.placeholderOf('demo')!;
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest({
      createConnection: () => tls, path, method: 'GET',
      headers: { host: `api.test:${upstreamPort}`, authorization: `Bearer ${placeholder}`, 'accept-encoding': 'gzip, br', connection: 'close', ...headers },
    }, resolve);
    req.on('error', reject);
    req.end();
  });
  let body = '';
  res.setEncoding('latin1');
  for await (const chunk of res) body += chunk as string;
  tls.destroy();
  return { status: res.statusCode ?? 0, headers: res.headers, body, raw };
}

function assertNoValue(got: Got, what: string): void {
  for (const form of FORMS) {
    assert.ok(!got.raw.includes(form) && !got.body.includes(form), `${what}: the guest's bytes carry a form of the real value (${form.length} chars)`);
    assert.ok(!JSON.stringify(got.headers).includes(form), `${what}: a response header carries a form of the real value`);
  }
}

test('an echo of the request headers (content-length) reaches the guest masked, same length, and is reported by name', async () => {
  const got = await guestGet('/echo-headers');
  assert.equal(got.status, 200);
  assertNoValue(got, '/echo-headers');
  const echoed = JSON.parse(got.body) as { headers: Record<string, string> };
  assert.equal(echoed.headers.authorization, `Bearer ${'*'.repeat(REAL.length)}`, 'the value was there and is masked with its length');
  assert.equal(Number(got.headers['content-length']), Buffer.byteLength(got.body, 'latin1'), 'content-length still right');
  assert.equal(got.headers['x-echo-auth'], `Bearer ${'*'.repeat(REAL.length)}`);
  assert.equal(acceptEncodings.at(-1), 'identity', 'the upstream was asked for identity encoding, whatever the guest asked');
  const reflected = await reflectedEvents(2);
  assert.ok(reflected.some((e) => e.data?.where === 'body' && e.data.secret === 'demo' && e.data.form === 'raw' && e.data.count === 1), JSON.stringify(reflected));
  assert.ok(reflected.some((e) => e.data?.where === 'headers' && e.data.secret === 'demo' && e.data.count === 2), 'x-echo-auth raw and location percent-encoded');
  const close = await closeEvent('/echo-headers');
  assert.ok(JSON.stringify(close.data?.responseHook).includes('"secret":"demo"'), 'egress.close names what was masked');
  assertAuditClean();
});

test('a chunked echo split into 7-byte pieces, in raw, base64, hex and percent forms, reaches the guest with no form of the value', async () => {
  audited.length = 0;
  const got = await guestGet('/echo-chunked');
  assert.equal(got.status, 200);
  assertNoValue(got, '/echo-chunked');
  const parsed = JSON.parse(got.body) as Record<string, string>;
  assert.equal(parsed.near, REAL.slice(0, -1), 'a string that only resembles the value is left alone');
  for (const k of ['raw', 'hex', 'HEX', 'pct']) assert.match(parsed[k]!, /^\*+$/, `${k} masked whole`);
  const reflected = await reflectedEvents(4);
  const forms = new Set(reflected.map((e) => e.data?.form));
  for (const f of ['raw', 'base64', 'hex', 'url']) assert.ok(forms.has(f), `form ${f} reported: ${[...forms].join(',')}`);
  assertAuditClean();
});

test('a gzip response sent despite identity is decoded, scrubbed and re-framed as chunked identity', async () => {
  const got = await guestGet('/gzip');
  assert.equal(got.status, 200);
  assert.equal(got.headers['content-encoding'], undefined);
  assert.equal(got.headers['transfer-encoding'], 'chunked');
  assert.equal(got.body, `token ${'*'.repeat(REAL.length)}`);
  assertNoValue(got, '/gzip');
});

test('a response in an encoding cordon does not decode is refused, not passed on', async () => {
  const got = await guestGet('/zstd');
  assert.equal(got.status, 403);
  assert.equal(got.headers['x-cordon-error'], 'response-unscannable');
  assert.ok(!got.raw.includes(REAL));
  const close = await closeEvent('/zstd');
  assert.equal(close.reason, 'response-unscannable');
});

test('upstream text outside headers and body (reason phrase, an unknown encoding quoted in the refusal) never carries the value', async () => {
  const cases = [
    { name: 'value as the reason phrase', path: '/echo-status', status: 200 },
    { name: 'value as the content-encoding', path: '/echo-encoding', status: 403 },
  ];
  for (const c of cases) {
    const got = await guestGet(c.path);
    assert.equal(got.status, c.status, c.name);
    for (const form of FORMS) assert.ok(!got.raw.includes(form), `${c.name}: no form of the value reaches the guest`);
    assert.ok(!got.raw.toLowerCase().includes(REAL.toLowerCase().slice(0, 12)), `${c.name}: not even a case-folded part of the value`);
  }
});

test('plain HTTP through the proxy (no tunnel) is scrubbed the same way', async () => {
  const socket = netConnect({ port: doorPort, host: '127.0.0.1' });
  let raw = '';
  socket.on('data', (d: Buffer) => (raw += d.toString('latin1')));
  socket.write(`GET http://api.test:${plainPort}/echo-headers HTTP/1.1\r\nHost: api.test:${plainPort}\r\n`
    + `Authorization: Bearer ${secrets.placeholderOf('demo')}\r\nConnection: close\r\n\r\n`);
  await once(socket, 'close');
  assert.match(raw, /^HTTP\/1\.1 200/);
  assert.ok(raw.includes(`"authorization":"Bearer ${'*'.repeat(REAL.length)}"`), 'the value was reflected and masked');
  for (const form of FORMS) assert.ok(!raw.includes(form), 'no form of the value reaches the guest');
});

test('fail closed: a response hook that throws, or a body transform that fails, gets the guest no upstream bytes', async () => {
  const cases: Array<{ name: string; response: () => unknown; status: number | 'cut' }> = [
    { name: 'the hook throws', response: () => { throw new Error('scrubber broke'); }, status: 403 },
    { name: 'making the body transform throws', response: () => ({ body: () => { throw new Error('no transform'); } }), status: 403 },
    { name: 'the body transform fails mid-stream', response: () => ({ body: (src: NodeJS.ReadableStream) => src.pipe(new Transform({ transform(_c, _e, done) { done(new Error('boom')); } })) }), status: 'cut' },
  ];
  for (const c of cases) {
    const p = createEgressProxy({ lookup: async () => [{ address: '127.0.0.1', family: 4 }], requestHook: () => ({ response: c.response as never }) });
    try {
      const door = p.openDoor({ sandboxId: 'sb-failclosed', agent: 'holder', agentConfig: { egress: [{ host: 'api.test', ports: [plainPort] }, { cidr: '127.0.0.1/32', ports: [plainPort] }] }, audit: { append: async () => undefined } });
      const port = (await door.listen(0, '127.0.0.1')).port;
      const socket = netConnect({ port, host: '127.0.0.1' });
      let raw = '';
      socket.on('data', (d: Buffer) => (raw += d.toString('latin1')));
      socket.on('error', () => undefined);
      socket.write(`GET http://api.test:${plainPort}/echo-headers HTTP/1.1\r\nHost: api.test:${plainPort}\r\nAuthorization: Bearer guest-text\r\nConnection: close\r\n\r\n`);
      await once(socket, 'close');
      assert.ok(!raw.includes('guest-text'), `${c.name}: no upstream byte reached the client`);
      if (c.status === 'cut') assert.ok(!/\r\n0\r\n\r\n$/.test(raw), `${c.name}: the response was cut, not ended cleanly`);
      else assert.match(raw, new RegExp(`^HTTP/1\\.1 ${c.status} [^]*x-cordon-error: response-hook-failed`, 'i'), c.name);
    } finally {
      await p.close();
    }
  }
});

async function reflectedEvents(count: number): Promise<AuditEvent[]> {
  for (let i = 0; i < 200; i++) {
    const found = audited.filter((e) => e.type === 'secret.reflected');
    if (found.length >= count) return found;
    await sleep(10);
  }
  throw new Error(`fewer than ${count} secret.reflected events: ${JSON.stringify(audited.map((e) => [e.type, e.reason]))}`);
}

async function closeEvent(path: string): Promise<AuditEvent> {
  for (let i = 0; i < 200; i++) {
    const e = audited.find((x) => x.type === 'egress.close' && x.data?.path === path);
    if (e) return e;
    await sleep(10);
  }
  throw new Error(`no egress.close for ${path}`);
}

function assertAuditClean(): void {
  const text = JSON.stringify(audited);
  for (const form of FORMS) assert.ok(!text.includes(form), 'no audit event carries a form of the real value');
}
