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
 */
import Database from 'better-sqlite3';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkpointPayload, verifyAudit } from '../../audit/index.js';
import { openStore } from '../../store/index.js';
import { contained, couldNotJudge, notApplicable, succeeded, type Attack, type AttackContext, type AttackResult } from '../types.js';

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

function tamperAttack(id: string, title: string, tamper: (db: Db, victim: Row) => string): Attack {
  return { id, category: 'audit', title, run: (ctx) => onCopy(ctx, tamper) };
}

export const auditAttacks: Attack[] = [
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
