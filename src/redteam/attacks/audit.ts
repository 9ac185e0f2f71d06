/**
 * Audit tampering, done as an attacker with write access to the database
 * would: on a COPY of the scratch deployment's store (never the live one),
 * after the log is sealed by a signed checkpoint. Each attack hides the
 * evidence of an earlier refusal (a `deny` event of this run): edit it to
 * `allow`, delete it, reorder it, rewrite the whole chain after it with
 * correct hashes, and forge a checkpoint over the rewritten chain with a key
 * of the attacker's. Scored by the real verify code (`cordon audit verify`):
 * the attack succeeded when verify still says the log is intact. The weak
 * setup keeps no audit log, so these attacks do not apply there.
 *
 * Before those, a flood: the guest makes refused requests as fast as it can,
 * to fill the audit store (a store that cannot be written stops every
 * sandbox). It succeeded when the log took one event per refusal.
 */
import Database from 'better-sqlite3';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkpointPayload, queryEvents, verifyAudit } from '../../audit/index.js';
import { openStore } from '../../store/index.js';
import { sleep } from '../../util/index.js';
import { contained, couldNotJudge, notApplicable, succeeded, type Attack, type AttackContext, type AttackResult } from '../types.js';
import { py } from './util.js';

type Db = InstanceType<typeof Database>;
interface Row { seq: number; body: string; hash: string; prev_hash: string; decision: string | null }

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

/** Copy the sealed scratch store, tamper with the copy, verify it with the deployment's public keys. */
async function onCopy(ctx: AttackContext, tamper: (db: Db, victim: Row) => string): Promise<AttackResult> {
  const d = ctx.target.deployment;
  if (!d) return notApplicable('the weak setup keeps no audit log: nothing records the actions, nothing to tamper with');
  await d.audit.checkpoint();
  const dir = mkdtempSync(join(tmpdir(), 'cordon-redteam-audit-'));
  try {
    const copy = join(dir, 'copy.db');
    const live = new Database(join(d.home, 'cordon.db'), { readonly: true, fileMustExist: true });
    try {
      live.prepare('VACUUM INTO ?').run(copy);
    } finally {
      live.close();
    }
    const db = new Database(copy);
    let what: string;
    try {
      const victim = db.prepare("SELECT seq, body, hash, prev_hash, decision FROM audit_events WHERE decision = 'deny' AND seq < (SELECT max(seq) FROM audit_checkpoints) ORDER BY seq DESC LIMIT 1").get() as Row | undefined;
      if (!victim) return couldNotJudge('no sealed deny event to hide yet (run the other attacks first)');
      what = tamper(db, victim);
    } finally {
      db.close();
    }
    const store = await openStore({ kind: 'sqlite', path: copy });
    try {
      const report = await verifyAudit(store, { keyDir: join(d.home, 'keys') });
      const ev = [what, `verify: ok=${report.ok} problem=${report.problem ?? 'none'} firstBadSeq=${report.firstBadSeq ?? '-'}: ${report.message}`];
      return report.ok ? succeeded('verify did not notice the tampering', ...ev) : contained(`verify caught it (${report.problem} at seq ${report.firstBadSeq})`, ...ev);
    } finally {
      await store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Make `victim` say allow and recompute every hash after it, so the chain links again. */
function rewriteChain(db: Db, victim: Row): number {
  const rows = db.prepare('SELECT seq, body, hash, prev_hash, decision FROM audit_events WHERE seq >= ? ORDER BY seq').all(victim.seq) as Row[];
  const update = db.prepare('UPDATE audit_events SET body = ?, hash = ?, prev_hash = ?, decision = ? WHERE seq = ?');
  let prev = victim.prev_hash;
  for (const r of rows) {
    let body = r.body.replace(`"prevHash":"${r.prev_hash}"`, `"prevHash":"${prev}"`);
    let decision = r.decision;
    if (r.seq === victim.seq) {
      body = body.replace('"decision":"deny"', '"decision":"allow"');
      decision = 'allow';
    }
    const hash = sha256(body);
    update.run(body, hash, prev, decision, r.seq);
    prev = hash;
  }
  return rows.length;
}

/** Refused requests the flood makes (sequentially, each on its own connection to the guest's proxy). */
const FLOOD_REQUESTS = 600;

/** Sends `CONNECT` for names no policy allows through the guest's proxy; prints `refused N of M`. */
const FLOOD_SCRIPT = `
import os, socket, sys, urllib.parse
proxy = urllib.parse.urlsplit(os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy") or "http://127.0.0.1:3128")
n, mark, refused = int(sys.argv[1]), sys.argv[2], 0
for i in range(n):
    try:
        s = socket.create_connection((proxy.hostname, proxy.port or 3128), timeout=5)
        s.sendall(("CONNECT %s-%d.invalid:443 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % (mark, i)).encode())
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            chunk = s.recv(4096)
            if not chunk: break
            head += chunk
        s.close()
        if head.split(b" ")[1:2] == [b"403"]: refused += 1
    except OSError:
        pass
print("refused %d of %d" % (refused, n))
`;

/** A guest floods its door with refused requests; the log must keep its size bounded and still account for each. */
const refusalFlood: Attack = {
  id: 'audit.refusal-flood', category: 'audit', title: `fill the audit store: ${FLOOD_REQUESTS} refused requests as fast as the guest can make them`, timeoutMs: 150_000,
  async run(ctx) {
    const d = ctx.target.deployment;
    if (!d) return notApplicable('the weak setup keeps no audit log: there is no store to fill');
    const sandbox = d.sandboxes.main.id;
    const afterSeq = d.audit.head.seq;
    const started = Date.now();
    const r = await py(ctx, FLOOD_SCRIPT, { args: [String(FLOOD_REQUESTS), ctx.marker], timeoutMs: 120_000 });
    const seconds = (Date.now() - started) / 1000;
    const seen = Number(/refused (\d+) of/.exec(r.stdout)?.[1] ?? NaN);
    if (!Number.isInteger(seen)) return couldNotJudge(`the flood did not run: ${r.stdout.trim()} ${r.stderr.trim().slice(-300)}`);
    await sleep(1_500); // a door writes what it counted once a second
    const events = await queryEvents(d.store, { sandbox, afterSeq, limit: 10_000 });
    const ours = (host: unknown): boolean => typeof host === 'string' && host.startsWith(`${ctx.marker}-`);
    const single = events.filter((e) => e.type === 'egress.request' && e.decision !== 'allow' && ours(e.data.host)).length;
    const summaries = events.filter((e) => e.type === 'egress.refusals');
    const counted = summaries.reduce((n, e) => n + (typeof e.data.count === 'number' ? e.data.count : 0), 0);
    const evidence = [
      `the guest made ${FLOOD_REQUESTS} requests in ${seconds.toFixed(1)} s and read ${seen} refusals (the rest were cut short inside the guest)`,
      `audit: ${single} refusals written one by one, ${counted} counted in ${summaries.length} egress.refusals event(s)`,
    ];
    if (single + counted < FLOOD_REQUESTS / 4) return couldNotJudge('too few requests reached the door to judge', ...evidence);
    if (counted === 0) return succeeded('the log took one event per refused request: a guest can grow it as fast as it can send', ...evidence);
    return contained(`the log wrote ${single} of ${single + counted} refusals one by one and counted the rest`, ...evidence);
  },
};

function tamperAttack(id: string, title: string, tamper: (db: Db, victim: Row) => string): Attack {
  return { id, category: 'audit', title, run: (ctx) => onCopy(ctx, tamper) };
}

export const auditAttacks: Attack[] = [
  refusalFlood,
  tamperAttack('audit.edit-event', 'edit a deny event to allow (body and column)', (db, v) => {
    db.prepare("UPDATE audit_events SET body = replace(body, '\"decision\":\"deny\"', '\"decision\":\"allow\"'), decision = 'allow' WHERE seq = ?").run(v.seq);
    return `event ${v.seq} edited from deny to allow`;
  }),
  tamperAttack('audit.delete-event', 'delete the event that recorded a refusal', (db, v) => {
    db.prepare('DELETE FROM audit_events WHERE seq = ?').run(v.seq);
    return `event ${v.seq} deleted`;
  }),
  tamperAttack('audit.reorder-events', 'swap a refusal with the event after it', (db, v) => {
    db.prepare('UPDATE audit_events SET seq = -1 WHERE seq = ?').run(v.seq);
    db.prepare('UPDATE audit_events SET seq = ? WHERE seq = ?').run(v.seq, v.seq + 1);
    db.prepare('UPDATE audit_events SET seq = ? WHERE seq = -1').run(v.seq + 1);
    return `events ${v.seq} and ${v.seq + 1} swapped`;
  }),
  tamperAttack('audit.rewrite-chain', 'edit a refusal and recompute every later hash (a consistent chain)', (db, v) => {
    const n = rewriteChain(db, v);
    return `event ${v.seq} edited and ${n} hashes recomputed from there`;
  }),
  tamperAttack('audit.forge-checkpoint', 'rewrite the chain and re-sign every checkpoint with an attacker key under the real key id', (db, v) => {
    const n = rewriteChain(db, v);
    const { privateKey } = generateKeyPairSync('ed25519');
    const cps = db.prepare('SELECT seq, ts, key_id FROM audit_checkpoints WHERE seq >= ?').all(v.seq) as Array<{ seq: number; ts: string; key_id: string }>;
    const hashOf = db.prepare('SELECT hash FROM audit_events WHERE seq = ?');
    const put = db.prepare('UPDATE audit_checkpoints SET hash = ?, signature = ? WHERE seq = ?');
    for (const cp of cps) {
      const hash = (hashOf.get(cp.seq) as { hash: string } | undefined)?.hash ?? '';
      put.run(hash, sign(null, checkpointPayload({ seq: cp.seq, hash, ts: cp.ts, keyId: cp.key_id }), privateKey).toString('base64'), cp.seq);
    }
    return `event ${v.seq} edited, ${n} hashes recomputed, ${cps.length} checkpoint(s) re-signed with a forged key`;
  }),
];
