/**
 * verifyAudit tests: each way of tampering with the stored log (done with raw
 * SQL on a connection of its own, as an attacker with write access to the
 * database would) is reported with the right problem and the first bad seq,
 * on SQLite and on PostgreSQL (`[sqlite] …`, `[postgres] …`).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { AuditRow, Database, Store } from '../store/index.js';
import { eachStore } from '../store/testing/each-store.js';
import { AuditLog, checkpointPayload, verifyAudit, type VerifyProblem } from './index.js';
import { composeBody, prepareEvent, sha256Hex } from './event.js';

const TOTAL = 2500;

/** Fill the store with 2,500 events and checkpoints at 1000, 2000 and 2500. */
async function buildLog(store: Store, keyDir: string): Promise<void> {
  const log = await AuditLog.open({ store, keyDir, checkpointEvery: 1000, checkpointIntervalMs: 60_000 });
  for (let start = 0; start < TOTAL; start += 1000) {
    const n = Math.min(1000, TOTAL - start);
    await Promise.all(
      Array.from({ length: n }, (_, i) =>
        log.append({ type: 'egress.request', actor: 'agent:r', agent: 'r', decision: 'allow', data: { n: start + i + 1 } }),
      ),
    );
  }
  await log.close();
}

/** Rows that chain correctly from `prevHash`, as a forger who knows the format would write them. */
function forgeRows(fromSeq: number, toSeq: number, prevHash: string): AuditRow[] {
  const rows: AuditRow[] = [];
  for (let seq = fromSeq; seq <= toSeq; seq++) {
    const p = prepareEvent({ type: 'egress.request', actor: 'agent:r', agent: 'r', decision: 'allow', data: { forged: seq } }, '2030-01-01T00:00:00.000Z');
    const body = composeBody(p, seq, prevHash);
    const hash = sha256Hex(body);
    rows.push({ seq, ts: p.ts, type: 'egress.request', sandbox: null, agent: 'r', actor: 'agent:r', decision: 'allow', prevHash, hash, body });
    prevHash = hash;
  }
  return rows;
}

async function hashAt(db: Kysely<Database>, seq: number): Promise<string> {
  const r = await sql<{ hash: string }>`select hash from audit_events where seq = ${seq}`.execute(db);
  return r.rows[0]!.hash;
}

interface Case {
  name: string;
  /** `db` is a connection of the attacker's own; `store` is the one the log was written through. */
  tamper: (db: Kysely<Database>, store: Store) => Promise<void>;
  problem: VerifyProblem;
  firstBadSeq: number;
  message: RegExp;
}

const cases: Case[] = [
  {
    name: 'edited body',
    tamper: async (db) => void (await sql`update audit_events set body = replace(body, '"decision":"allow"', '"decision":"deny"') where seq = 1500`.execute(db)),
    problem: 'edited',
    firstBadSeq: 1500,
    message: /event 1500 was edited/,
  },
  {
    name: 'edited indexed column only',
    tamper: async (db) => void (await sql`update audit_events set decision = 'deny' where seq = 1500`.execute(db)),
    problem: 'edited',
    firstBadSeq: 1500,
    message: /decision column edited/,
  },
  {
    name: 'edited agent column set to null',
    tamper: async (db) => void (await sql`update audit_events set agent = null where seq = 700`.execute(db)),
    problem: 'edited',
    firstBadSeq: 700,
    message: /agent column edited/,
  },
  {
    name: 'edited hash column only',
    tamper: async (db) => void (await sql`update audit_events set hash = ${'f'.repeat(64)} where seq = 1500`.execute(db)),
    problem: 'edited',
    firstBadSeq: 1500,
    message: /event 1500 was edited/,
  },
  {
    name: 'edited body with its hash recomputed',
    tamper: async (db) => {
      const r = await sql<{ body: string }>`select body from audit_events where seq = 1500`.execute(db);
      const body = r.rows[0]!.body.replace('"n":1500', '"n":-1');
      await sql`update audit_events set body = ${body}, hash = ${sha256Hex(body)} where seq = 1500`.execute(db);
    },
    problem: 'bad-link',
    firstBadSeq: 1501,
    message: /event 1501 does not link to event 1500/,
  },
  {
    name: 'deleted event',
    tamper: async (db) => void (await sql`delete from audit_events where seq = 1500`.execute(db)),
    problem: 'deleted',
    firstBadSeq: 1500,
    message: /event 1500 is missing/,
  },
  {
    name: 'deleted range',
    tamper: async (db) => void (await sql`delete from audit_events where seq between 1500 and 1510`.execute(db)),
    problem: 'deleted',
    firstBadSeq: 1500,
    message: /events 1500\.\.1510 are missing/,
  },
  {
    name: 'deleted first event',
    tamper: async (db) => void (await sql`delete from audit_events where seq = 1`.execute(db)),
    problem: 'deleted',
    firstBadSeq: 1,
    message: /event 1 is missing/,
  },
  {
    name: 'reordered: seq columns of two rows swapped',
    tamper: async (db) => {
      await sql`update audit_events set seq = -1 where seq = 1500`.execute(db);
      await sql`update audit_events set seq = 1500 where seq = 1600`.execute(db);
      await sql`update audit_events set seq = 1600 where seq = -1`.execute(db);
    },
    problem: 'reordered',
    firstBadSeq: 1500,
    message: /stored at seq 1500 is event 1600/,
  },
  {
    name: 'reordered: bodies and hashes of neighbours swapped',
    tamper: async (db) => {
      type R = { body: string; hash: string; prev_hash: string };
      const get = async (seq: number) => (await sql<R>`select body, hash, prev_hash from audit_events where seq = ${seq}`.execute(db)).rows[0]!;
      const [a, b] = [await get(1500), await get(1501)];
      const put = (seq: number, r: R) => sql`update audit_events set body = ${r.body}, hash = ${r.hash}, prev_hash = ${r.prev_hash} where seq = ${seq}`.execute(db);
      await put(1500, b);
      await put(1501, a);
    },
    problem: 'reordered',
    firstBadSeq: 1500,
    message: /stored at seq 1500 is event 1501/,
  },
  {
    name: 'truncated tail covered by a checkpoint',
    tamper: async (db) => void (await sql`delete from audit_events where seq > 2300`.execute(db)),
    problem: 'truncated',
    firstBadSeq: 2301,
    message: /ends at seq 2300 but a signed checkpoint seals seq 2500/,
  },
  {
    name: 'truncated and appended again with a consistent chain',
    tamper: async (db, s) => {
      await sql`delete from audit_events where seq > 1800`.execute(db);
      await s.audit.insertEvents(forgeRows(1801, 2600, await hashAt(db, 1800)));
    },
    problem: 'truncated',
    firstBadSeq: 1001, // anything after the last matching checkpoint may have been recomputed
    message: /event 2000 is not the event its signed checkpoint sealed: the log after seq 1000 was rewritten/,
  },
  {
    name: 'forged checkpoint: signature altered',
    tamper: async (db) => {
      const sig = Buffer.alloc(64, 7).toString('base64');
      await sql`update audit_checkpoints set signature = ${sig} where seq = 2000`.execute(db);
    },
    problem: 'forged-checkpoint',
    firstBadSeq: 2000,
    message: /checkpoint at seq 2000 has a bad signature/,
  },
  {
    name: 'forged checkpoint: signed by an unknown key',
    tamper: async (db, s) => {
      const { privateKey } = generateKeyPairSync('ed25519');
      const cp = { seq: 2200, hash: await hashAt(db, 2200), ts: '2030-01-01T00:00:00.000Z', keyId: '0123456789abcdef' };
      const signature = sign(null, checkpointPayload(cp), privateKey).toString('base64');
      await s.audit.insertCheckpoint({ ...cp, signature });
    },
    problem: 'forged-checkpoint',
    firstBadSeq: 2200,
    message: /unknown key 0123456789abcdef/,
  },
  {
    name: 'malformed body with a matching hash',
    tamper: async (db) => {
      const body = 'not json';
      await sql`update audit_events set body = ${body}, hash = ${sha256Hex(body)} where seq = 1200`.execute(db);
    },
    problem: 'malformed',
    firstBadSeq: 1200,
    message: /not JSON/,
  },
];

for (const s of eachStore('cordon_verify')) {
  s.test('verifyAudit reports each kind of tampering at the first bad seq', async (t) => {
    for (const c of cases) {
      await t.test(c.name, async () => {
        await s.withStore(async ({ store, keyDir, loc }) => {
          await buildLog(store, keyDir);
          const clean = await verifyAudit(store, { keyDir });
          assert.equal(clean.ok, true, `before tampering: ${clean.message}`);
          await loc.outside((db) => c.tamper(db, store));
          const report = await verifyAudit(store, { keyDir, pageSize: 700 });
          assert.equal(report.ok, false, 'tampering must be detected');
          assert.equal(report.problem, c.problem, report.message);
          assert.equal(report.firstBadSeq, c.firstBadSeq, report.message);
          assert.match(report.message, c.message);
        });
      });
    }
  });

  s.test('an intact log verifies, with unsealed tail events as a warning only', async () => {
    await s.withStore(async ({ store, keyDir, loc }) => {
      const empty = await verifyAudit(store, { keyDir: loc.dir });
      assert.deepEqual([empty.ok, empty.events, empty.message], [true, 0, 'the audit log is empty']);

      const log = await AuditLog.open({ store, keyDir, checkpointIntervalMs: 60_000 });
      await Promise.all(Array.from({ length: 5 }, (_, i) => log.append({ type: 'x', actor: 'a', data: { i } })));
      await log.checkpoint();
      await Promise.all(Array.from({ length: 3 }, (_, i) => log.append({ type: 'x', actor: 'a', data: { i } })));
      const open = await verifyAudit(store, { publicKeyPem: log.publicKeyPem });
      assert.equal(open.ok, true, open.message);
      assert.equal(open.unsealedEvents, 3);
      assert.match(open.warnings.join('\n'), /3 event\(s\) after seq 5 are chained but not yet sealed/);
      await log.close();
      const closed = await verifyAudit(store, { keyDir });
      assert.deepEqual([closed.ok, closed.events, closed.checkpoints, closed.unsealedEvents], [true, 8, 2, 0]);
    });
  });

  s.test('a checkpoint verified with the wrong public key is reported as forged', async () => {
    await s.withStore(async ({ store, keyDir }) => {
      await buildLog(store, keyDir);
      const other = generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' }).toString();
      const report = await verifyAudit(store, { publicKeyPem: other });
      assert.equal(report.problem, 'forged-checkpoint');
      assert.equal(report.firstBadSeq, 1000);
      assert.equal(report.events, 1000, 'events up to the first checkpoint were checked');
    });
  });
}
