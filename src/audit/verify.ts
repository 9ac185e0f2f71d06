/**
 * Verification of the audit log: walks every event in seq order (in pages,
 * keyset-paginated), recomputes each hash from the stored body, checks that
 * the indexed columns agree with the body and that each event links to the
 * one before, and checks every signed checkpoint against the events it seals.
 * It reports the first problem found and where.
 */
import type { KeyObject } from 'node:crypto';
import type { AuditRow, CheckpointRow, Store } from '../store/index.js';
import { checkCheckpoint } from './checkpoint.js';
import { GENESIS_HASH, sha256Hex } from './event.js';
import { KEY_ROTATED_EVENT, currentKeyId, keyIdOf, loadPublicKeys, parsePublicKeyPem } from './keys.js';

export type VerifyProblem =
  | 'edited'
  | 'deleted'
  | 'reordered'
  | 'truncated'
  | 'forged-checkpoint'
  | 'bad-link'
  | 'malformed';

export interface VerifyReport {
  ok: boolean;
  /** Events checked (all of them when ok). */
  events: number;
  /** Checkpoints whose signature verified. */
  checkpoints: number;
  /** Highest seq read (0 for an empty log). */
  lastSeq: number;
  firstBadSeq?: number;
  problem?: VerifyProblem;
  message: string;
  /** Events after the last valid checkpoint: chained but not yet signed. Not a failure. */
  unsealedEvents: number;
  warnings: string[];
  durationMs: number;
}

export interface VerifyOptions {
  /** Public key(s) in SPKI PEM. Takes precedence over keyDir. */
  publicKeyPem?: string | string[];
  /** Directory holding `audit-ed25519*.pub` (current and retired keys). */
  keyDir?: string;
  /** Events per page. @default 5000 */
  pageSize?: number;
}

interface Finding {
  problem: VerifyProblem;
  seq: number;
  message: string;
}

/**
 * Checks a run of consecutive events. Used by {@link verifyAudit} and by
 * `AuditLog.open` on the tail that a previous run left unsealed.
 */
export class ChainChecker {
  /** The seq the next row must have. */
  nextSeq: number;
  /** The hash the next row's prevHash must equal. */
  prevHash: string;

  constructor(afterSeq = 0, prevHash = GENESIS_HASH) {
    this.nextSeq = afterSeq + 1;
    this.prevHash = prevHash;
  }

  /** Check one row; on success advance past it. */
  check(row: AuditRow): Finding | undefined {
    const seq = this.nextSeq;
    if (row.seq !== seq) {
      if (row.seq > seq) {
        const range = row.seq - 1 === seq ? `event ${seq} is` : `events ${seq}..${row.seq - 1} are`;
        return { problem: 'deleted', seq, message: `${range} missing: the log jumps from ${seq - 1} to ${row.seq}` };
      }
      return { problem: 'reordered', seq: row.seq, message: `event ${row.seq} appears after event ${seq - 1}` };
    }
    if (sha256Hex(row.body) !== row.hash) {
      return { problem: 'edited', seq, message: `event ${seq} was edited: its body no longer matches its hash` };
    }
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(row.body) as Record<string, unknown>;
    } catch {
      return { problem: 'malformed', seq, message: `event ${seq} has a body that is not JSON` };
    }
    if (body === null || typeof body !== 'object' || typeof body.seq !== 'number') {
      return { problem: 'malformed', seq, message: `event ${seq} has a body without a numeric seq` };
    }
    if (body.seq !== seq) {
      return {
        problem: 'reordered',
        seq,
        message: `the event stored at seq ${seq} is event ${body.seq}: events were moved or swapped`,
      };
    }
    const column = editedColumn(row, body);
    if (column === 'malformed') {
      return { problem: 'malformed', seq, message: `event ${seq} has a body with missing or malformed fields` };
    }
    if (column !== undefined) {
      return { problem: 'edited', seq, message: `event ${seq} has its ${column} column edited` };
    }
    if (row.prevHash !== this.prevHash) {
      return {
        problem: 'bad-link',
        seq,
        message: `event ${seq} does not link to event ${seq - 1}: its prevHash differs from the hash of ${seq - 1} (one of them was rewritten)`,
      };
    }
    this.nextSeq = seq + 1;
    this.prevHash = row.hash;
    return undefined;
  }
}

/** Remember the key a chained `audit.key-rotated` event retired (the first such event for a key counts). */
function noteRetirement(row: AuditRow, retiredAt: Map<string, number>): void {
  let oldKeyId: unknown;
  try {
    oldKeyId = (JSON.parse(row.body) as { data?: { oldKeyId?: unknown } }).data?.oldKeyId;
  } catch {
    return; // the chain check already read this body as JSON
  }
  if (typeof oldKeyId === 'string' && !retiredAt.has(oldKeyId)) retiredAt.set(oldKeyId, row.seq);
}

/** The first indexed column that disagrees with the body, `malformed` for a bad body, or undefined. */
function editedColumn(row: AuditRow, b: Record<string, unknown>): string | undefined {
  if (typeof b.type !== 'string' || typeof b.actor !== 'string' || typeof b.ts !== 'string' || typeof b.prevHash !== 'string') {
    return 'malformed';
  }
  if (b.data === null || typeof b.data !== 'object' || Array.isArray(b.data)) return 'malformed';
  if (b.prevHash !== row.prevHash) return 'prev_hash';
  if (b.ts !== row.ts) return 'ts';
  if (b.type !== row.type) return 'type';
  if (b.actor !== row.actor) return 'actor';
  if ((b.agent ?? null) !== row.agent) return 'agent';
  if ((b.sandbox ?? null) !== row.sandbox) return 'sandbox';
  if ((b.decision ?? null) !== row.decision) return 'decision';
  return undefined;
}

function publicKeysFrom(opts: VerifyOptions): Map<string, KeyObject> {
  if (opts.publicKeyPem !== undefined) {
    const pems = Array.isArray(opts.publicKeyPem) ? opts.publicKeyPem : [opts.publicKeyPem];
    const keys = new Map<string, KeyObject>();
    for (const pem of pems) {
      const key = parsePublicKeyPem(pem);
      keys.set(keyIdOf(key), key);
    }
    return keys;
  }
  if (opts.keyDir !== undefined) return loadPublicKeys(opts.keyDir);
  return new Map();
}

/**
 * Verify the whole log. Never throws for a tampered log (that is a report);
 * throws only when the store or the keys cannot be read.
 * @example
 * const report = await verifyAudit(store, { keyDir: join(cordonHome(), 'keys') });
 * if (!report.ok) console.error(`${report.problem} at seq ${report.firstBadSeq}: ${report.message}`);
 */
export async function verifyAudit(store: Store, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const started = performance.now();
  const pageSize = opts.pageSize ?? 5000;
  const warnings: string[] = [];
  const all = await store.audit.listCheckpoints();
  // Keys are needed only when there is something signed to check.
  const keys = all.length > 0 ? publicKeysFrom(opts) : new Map<string, KeyObject>();
  if (all.length > 0 && keys.size === 0) warnings.push('no public key given: every checkpoint is reported as forged');
  const sealed = new Map<number, CheckpointRow>();
  let forged: { cp: CheckpointRow; why: string } | undefined;
  for (const cp of all) {
    const result = checkCheckpoint(cp, keys);
    if (result === 'valid') sealed.set(cp.seq, cp);
    else if (forged === undefined) forged = { cp, why: result === 'unknown-key' ? `an unknown key ${cp.keyId}` : 'a bad signature' };
  }
  let maxSealed = 0;
  for (const seq of sealed.keys()) if (seq > maxSealed) maxSealed = seq;

  const chain = new ChainChecker();
  /** keyId → seq of the `audit.key-rotated` event that retired it: from there on that key signs nothing. */
  const retiredAt = new Map<string, number>();
  let finding: Finding | undefined;
  let lastGoodCheckpoint = 0;
  let events = 0;
  let lastSeq = 0;
  outer: for (;;) {
    const page = await store.audit.readAfter(lastSeq, pageSize);
    for (const row of page) {
      if (forged !== undefined && row.seq > forged.cp.seq) break outer;
      finding = chain.check(row);
      if (finding === undefined) {
        if (row.type === KEY_ROTATED_EVENT) noteRetirement(row, retiredAt);
        const cp = sealed.get(row.seq);
        const retired = cp === undefined ? undefined : retiredAt.get(cp.keyId);
        if (cp !== undefined && retired !== undefined) {
          // A leaked old key must not be able to extend the log after the rotation that retired it.
          finding = {
            problem: 'forged-checkpoint',
            seq: cp.seq,
            message: `the checkpoint at seq ${cp.seq} is signed by key ${cp.keyId}, which the ${KEY_ROTATED_EVENT} event at seq ${retired} retired: a retired key signs nothing from its rotation on`,
          };
        } else if (cp !== undefined) {
          if (cp.hash !== row.hash) {
            finding = {
              problem: 'truncated',
              seq: lastGoodCheckpoint + 1,
              message: `event ${row.seq} is not the event its signed checkpoint sealed: the log after seq ${lastGoodCheckpoint} was rewritten (truncated and appended again)`,
            };
          } else {
            lastGoodCheckpoint = row.seq;
          }
        }
      }
      if (finding !== undefined) {
        lastSeq = row.seq;
        break outer;
      }
      events++;
      lastSeq = row.seq;
    }
    if (page.length < pageSize) break;
  }

  if (finding === undefined && maxSealed > lastSeq && (forged === undefined || lastSeq + 1 < forged.cp.seq)) {
    finding = {
      problem: 'truncated',
      seq: lastSeq + 1,
      message: `the log ends at seq ${lastSeq} but a signed checkpoint seals seq ${maxSealed}: events ${lastSeq + 1}..${maxSealed} were removed`,
    };
  }
  if (finding === undefined && forged !== undefined) {
    finding = {
      problem: 'forged-checkpoint',
      seq: forged.cp.seq,
      message: `the checkpoint at seq ${forged.cp.seq} has ${forged.why}: it was not signed by cordon's audit key`,
    };
  }
  if (finding === undefined && opts.publicKeyPem === undefined && opts.keyDir !== undefined && lastGoodCheckpoint > 0) {
    // The newest seal must be the current key's. Otherwise the log was cut back past a rotation (and perhaps
    // extended with a retired key), which the retirement rule above cannot see once the rotation event is gone.
    const newest = sealed.get(lastGoodCheckpoint)!;
    const current = currentKeyId(opts.keyDir);
    if (current !== undefined && newest.keyId !== current) {
      finding = {
        problem: 'truncated',
        seq: newest.seq,
        message: `the newest checkpoint (seq ${newest.seq}) is signed by key ${newest.keyId}, not by the current audit key ${current}: `
          + 'the log was cut back past a key rotation, or a rotation stopped before the new key sealed anything '
          + '(then run `cordon audit rotate-key` again, or start `cordon up` once, and verify again)',
      };
    }
  }
  const unsealed = Math.max(0, lastSeq - lastGoodCheckpoint);
  if (finding === undefined && unsealed > 0) {
    warnings.push(`${unsealed} event(s) after seq ${lastGoodCheckpoint} are chained but not yet sealed by a signed checkpoint`);
  }
  const base = {
    events,
    checkpoints: sealed.size,
    lastSeq,
    unsealedEvents: finding === undefined ? unsealed : 0,
    warnings,
    durationMs: Math.round(performance.now() - started),
  };
  if (finding !== undefined) {
    return { ...base, ok: false, firstBadSeq: finding.seq, problem: finding.problem, message: finding.message };
  }
  const message =
    events === 0
      ? 'the audit log is empty'
      : `${events} events and ${sealed.size} checkpoints verified (last seq ${lastSeq})`;
  return { ...base, ok: true, message };
}
