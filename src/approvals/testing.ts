/**
 * Test-only: a real SQLite store in a temp dir, the real audit log, and the
 * approvals on top, with a clock the test moves; `reopen()` closes all three
 * and opens them again on the same files (a daemon restart).
 */
import { once } from 'node:events';
import { createServer as createHttpServer, type RequestListener } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import { AuditLog, queryEvents, type AuditEvent } from '../audit/index.js';
import { createEgressCa, issueCertificate } from '../egress/index.js';
import { openStore, type Store } from '../store/index.js';
import { tempDir } from '../testkit/index.js';
import { egressAction } from './action.js';
import { createApprovals, type Approvals, type ApprovalsConfig, type ApprovalsOptions } from './approvals.js';

export interface ApprovalsHarness {
  store: Store;
  audit: AuditLog;
  approvals: Approvals;
  /** Milliseconds the fake clock is ahead of the real one. */
  advance(ms: number): void;
  reopen(): Promise<void>;
  /** Events of a type, oldest first. */
  events(type: string): Promise<AuditEvent[]>;
  close(): Promise<void>;
}

export async function approvalsHarness(o: Partial<ApprovalsConfig> & Omit<Partial<ApprovalsOptions>, 'config' | 'store' | 'audit'> = {}): Promise<ApprovalsHarness> {
  const dir = tempDir('cordon-approvals-');
  let offsetMs = 0;
  const { ttlMs, holdTimeoutMs, twoApprovers, webhook, ...rest } = o;
  const config: ApprovalsConfig = { ttlMs: ttlMs ?? 60_000, holdTimeoutMs: holdTimeoutMs ?? 5_000, twoApprovers: twoApprovers ?? false, ...(webhook ? { webhook } : {}) };
  const open = async (): Promise<Pick<ApprovalsHarness, 'store' | 'audit' | 'approvals'>> => {
    const store = await openStore({ kind: 'sqlite', path: join(dir.path, 'cordon.db') });
    const audit = await AuditLog.open({ store, keyDir: join(dir.path, 'keys') });
    const approvals = await createApprovals({ store, audit, config, now: () => Date.now() + offsetMs, ...rest });
    return { store, audit, approvals };
  };
  const h = { ...(await open()) } as ApprovalsHarness;
  const shut = async (): Promise<void> => {
    h.approvals.close();
    await h.audit.close();
    await h.store.close();
  };
  h.advance = (ms) => { offsetMs += ms; };
  h.reopen = async () => {
    await shut();
    Object.assign(h, await open());
  };
  h.events = async (type) => (await queryEvents(h.store, { type, limit: 1000 })) as AuditEvent[];
  h.close = async () => {
    await shut().catch(() => undefined);
    dir.cleanup();
  };
  return h;
}

/** A POST to a deploy endpoint with this body, as agent `reviewer` in sandbox `sb-test`. */
export function deployAction(body: string, extra: { agent?: string; sandboxId?: string; headers?: Record<string, string> } = {}) {
  return egressAction({
    agent: extra.agent ?? 'reviewer', sandboxId: extra.sandboxId ?? 'sb-test', method: 'POST', url: 'https://api.example.com/deploy',
    headers: { host: 'api.example.com', 'content-type': 'application/json', ...extra.headers }, body: Buffer.from(body),
  });
}

export interface LoopbackUpstreams {
  /** The CA (PEM) that signed the HTTPS upstream's certificate: the proxy's `upstreamCa`. */
  caPem: string;
  httpsPort: number;
  plainPort: number;
  close(): void;
}

/** An HTTPS and a plain-HTTP upstream on loopback, both served by `handler`; the HTTPS one holds a certificate for `hosts`. */
export async function loopbackUpstreams(handler: RequestListener, hosts: string[]): Promise<LoopbackUpstreams> {
  const roots = createEgressCa({ commonName: 'test public roots' });
  const leaf = issueCertificate(roots, { hosts });
  const https = createHttpsServer({ cert: leaf.certPem, key: leaf.keyPem }, handler);
  const plain = createHttpServer(handler);
  for (const s of [https, plain]) {
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
  }
  return {
    caPem: roots.certPem,
    httpsPort: (https.address() as { port: number }).port,
    plainPort: (plain.address() as { port: number }).port,
    close: function closeUpstreams() {
      for (const s of [https, plain]) {
        s.closeAllConnections();
        s.close();
      }
    },
  };
}
