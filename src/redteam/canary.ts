/**
 * The canary servers the red team scores against, all on loopback:
 *
 * - the allowed HTTPS server (`api.redteam.test`, where the secret is bound,
 *   and `other.redteam.test`, an allowed host without a secret): records
 *   every request (SNI, Host, method, URL, headers, body). `GET /echo-headers`
 *   reflects the request's headers (as public echo services do),
 *   `GET /redirect?to=URL` answers 302 to URL, everything else `ok`.
 * - the attacker listener (forbidden): one TCP port that records the first
 *   bytes of every connection (raw TCP, TLS ClientHello or HTTP) and then
 *   serves HTTP or HTTPS on it, recording each request.
 * - the attacker's UDP port: records every datagram (DNS queries included).
 * - names the egress proxy was asked to resolve (filled by the deployment's
 *   lookup: a resolver query is a DNS exfiltration channel of its own).
 *
 * Anything that reaches the attacker, and any marker or secret that reaches a
 * place it should not, is the canary. Nothing here ever echoes a secret
 * except `/echo-headers` on purpose.
 */
import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createSecureContext, TLSSocket } from 'node:tls';
import { Duplex } from 'node:stream';
import { createEgressCa, issueCertificate } from '../egress/index.js';

export const REDTEAM_DOMAIN = 'redteam.test';
export const API_HOST = `api.${REDTEAM_DOMAIN}`;
export const OTHER_HOST = `other.${REDTEAM_DOMAIN}`;
export const ATTACKER_HOST = `attacker.${REDTEAM_DOMAIN}`;
export const REBIND_HOST = `rebind.${REDTEAM_DOMAIN}`;

/** One request a canary HTTP(S) server received. */
export interface SeenRequest {
  server: 'allowed' | 'attacker';
  /** TLS SNI, or '' for plain HTTP. */
  sni: string;
  host: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body: string;
}

export interface Canaries {
  /** PEM of the CA that issued the canary servers' certificates (the proxy's `upstreamCa`). */
  readonly upstreamCaPem: string;
  readonly okPort: number;
  readonly attackerPort: number;
  readonly udpPort: number;
  readonly requests: SeenRequest[];
  /** First bytes (latin1) of each TCP connection to the attacker port. */
  readonly attackerConnections: string[];
  readonly datagrams: string[];
  /** Names the egress proxy looked up. */
  readonly lookups: string[];
  /** Everything the model provider received (filled by the model server). */
  readonly modelBodies: string[];
  /** Where `needle` (case-insensitive) showed up outside the sandbox (since `since`, default ever); empty = nowhere. */
  sawOutside(needle: string, o?: { excludeBoundHeader?: boolean; since?: CanaryMark }): string[];
  /** Whether any byte at all reached the attacker (TCP or UDP) since `mark`. */
  attackerTouched(since: CanaryMark): string[];
  mark(): CanaryMark;
  close(): Promise<void>;
}

export interface CanaryMark {
  requests: number;
  connections: number;
  datagrams: number;
  lookups: number;
  model: number;
}

const MAX_RECORDED_BYTES = 64 * 1024;

/** Start every canary listener on 127.0.0.1 (the attacker also on ::1 when the host has IPv6). */
export async function startCanaries(): Promise<Canaries> {
  const ca = createEgressCa({ commonName: 'cordon redteam canary CA' });
  const leaf = issueCertificate(ca, { hosts: [API_HOST, OTHER_HOST, ATTACKER_HOST, REBIND_HOST, `*.${ATTACKER_HOST}`, '127.0.0.1', 'localhost'] });
  const requests: SeenRequest[] = [];
  const attackerConnections: string[] = [];
  const datagrams: string[] = [];
  const lookups: string[] = [];
  const modelBodies: string[] = [];

  const record = (server: SeenRequest['server']) => function recordRequest(req: IncomingMessage, res: ServerResponse): void {
    let body = '';
    req.on('data', (d: Buffer) => { if (body.length < MAX_RECORDED_BYTES) body += d.toString('latin1'); });
    const finish = (): void => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : String(v ?? '');
      const sni = (req.socket as TLSSocket).servername;
      requests.push({ server, sni: typeof sni === 'string' ? sni : '', host: headers.host ?? '', method: req.method ?? '', url: req.url ?? '', headers, body });
      answer(server, req, res, headers);
    };
    req.on('end', finish);
    req.on('error', () => undefined);
  };

  const allowed: HttpsServer = createHttpsServer({ key: leaf.keyPem, cert: leaf.certPem }, record('allowed'));
  const attackerHttp = createHttpServer(record('attacker'));
  const attackerTls = createSecureContext({ key: leaf.keyPem, cert: leaf.certPem });
  for (const s of [allowed, attackerHttp]) s.on('clientError', (_e, sock: Socket) => sock.destroy());
  const attacker: NetServer = createNetServer(function onAttackerConnection(sock: Socket) {
    sock.on('error', () => undefined);
    sock.setTimeout(10_000, () => sock.destroy());
    sock.once('data', (first: Buffer) => {
      attackerConnections.push(first.subarray(0, MAX_RECORDED_BYTES).toString('latin1'));
      if (first[0] === 0x16) {
        // TLS: replay the first bytes into a server-side TLS socket over a stream that follows the connection.
        const inner = new Duplex({
          read() { /* pushed below */ },
          write(chunk: Buffer, _enc, cb) { sock.write(chunk, cb); },
          final(cb) { sock.end(); cb(); },
        });
        inner.push(first);
        sock.on('data', (d: Buffer) => inner.push(d));
        sock.on('end', () => inner.push(null));
        sock.on('close', () => inner.destroy());
        const tlsSock = new TLSSocket(inner, { isServer: true, secureContext: attackerTls });
        tlsSock.on('error', () => sock.destroy());
        attackerHttp.emit('connection', tlsSock);
      } else if (/^[A-Z]{3,7} /.test(first.subarray(0, 8).toString('latin1'))) {
        sock.pause();
        sock.unshift(first);
        attackerHttp.emit('connection', sock);
        sock.resume();
      } else sock.end('received\n');
    });
  });
  const udp: UdpSocket = createSocket('udp4');
  udp.on('message', (msg) => void datagrams.push(decodeDatagram(msg)));

  allowed.listen(0, '127.0.0.1');
  await once(allowed, 'listening');
  attacker.listen({ port: 0, host: '::', ipv6Only: false });
  const bound = await Promise.race([once(attacker, 'listening').then(() => true), once(attacker, 'error').then(() => false)]);
  if (!bound) {
    attacker.listen(0, '127.0.0.1');
    await once(attacker, 'listening');
  }
  udp.bind(0, '127.0.0.1');
  await once(udp, 'listening');

  const texts = (since: CanaryMark): Array<[string, string]> => [
    ...requests.slice(since.requests).map((r, i): [string, string] => [`${r.server} server request #${since.requests + i + 1} (${r.method} ${r.sni || r.host} ${r.url.slice(0, 80)})`, JSON.stringify(r)]),
    ...attackerConnections.slice(since.connections).map((c, i): [string, string] => [`attacker TCP connection #${since.connections + i + 1}`, c]),
    ...datagrams.slice(since.datagrams).map((d, i): [string, string] => [`attacker UDP datagram #${since.datagrams + i + 1}`, d]),
    ...lookups.slice(since.lookups).map((l): [string, string] => [`egress proxy DNS lookup of ${l.slice(0, 80)}`, l]),
    ...modelBodies.slice(since.model).map((b, i): [string, string] => [`model provider request #${since.model + i + 1}`, b]),
  ];
  const zero: CanaryMark = { requests: 0, connections: 0, datagrams: 0, lookups: 0, model: 0 };

  return {
    upstreamCaPem: ca.certPem,
    okPort: (allowed.address() as AddressInfo).port,
    attackerPort: (attacker.address() as AddressInfo).port,
    udpPort: udp.address().port,
    requests, attackerConnections, datagrams, lookups, modelBodies,
    sawOutside(needle, o = {}) {
      const n = needle.toLowerCase();
      const hits: string[] = [];
      for (const [where, text] of texts(o.since ?? zero)) {
        let t = text;
        if (o.excludeBoundHeader && where.startsWith('allowed')) {
          const r = JSON.parse(text) as SeenRequest;
          if (r.host.startsWith(API_HOST)) t = JSON.stringify({ ...r, headers: { ...r.headers, authorization: '' } });
        }
        if (t.toLowerCase().includes(n)) hits.push(where);
      }
      return hits;
    },
    attackerTouched(since) {
      return texts(since).filter(([where]) => where.startsWith('attacker')).map(([where]) => where);
    },
    mark: () => ({ requests: requests.length, connections: attackerConnections.length, datagrams: datagrams.length, lookups: lookups.length, model: modelBodies.length }),
    async close() {
      attacker.close();
      allowed.closeAllConnections();
      attackerHttp.closeAllConnections();
      allowed.close();
      udp.close();
    },
  };
}

function answer(server: SeenRequest['server'], req: IncomingMessage, res: ServerResponse, headers: Record<string, string>): void {
  if (server === 'attacker') return void res.end('attacker got it\n');
  const url = new URL(req.url ?? '/', 'https://x');
  if (url.pathname === '/echo-headers') {
    res.setHeader('content-type', 'application/json');
    return void res.end(JSON.stringify({ headers }) + '\n');
  }
  if (url.pathname === '/redirect') {
    res.statusCode = 302;
    res.setHeader('location', url.searchParams.get('to') ?? '/');
    return void res.end();
  }
  res.end('ok\n');
}

/** A datagram as text; a DNS query also gives its name in dotted form. */
function decodeDatagram(msg: Buffer): string {
  const raw = msg.toString('latin1');
  if (msg.length < 13) return raw;
  const labels: string[] = [];
  let i = 12;
  while (i < msg.length && msg[i]! > 0 && msg[i]! < 64 && labels.length < 64) {
    labels.push(msg.subarray(i + 1, i + 1 + msg[i]!).toString('latin1'));
    i += msg[i]! + 1;
  }
  return labels.length > 0 ? `${raw} [dns query ${labels.join('.')}]` : raw;
}
