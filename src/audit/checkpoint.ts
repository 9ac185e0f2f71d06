/**
 * Signed checkpoints: an Ed25519 signature over canonical JSON of
 * `{seq, hash, ts, keyId}`, sealing every event up to `seq`. Whoever can write
 * the database can recompute a hash chain; only the key holder can sign.
 */
import { sign, verify, type KeyObject } from 'node:crypto';
import type { CheckpointRow } from '../store/index.js';
import { canonicalJson } from '../util/index.js';
import type { AuditSigningKey } from './keys.js';

/** The exact bytes a checkpoint signature covers. */
export function checkpointPayload(cp: Pick<CheckpointRow, 'seq' | 'hash' | 'ts' | 'keyId'>): Buffer {
  return Buffer.from(canonicalJson({ seq: cp.seq, hash: cp.hash, ts: cp.ts, keyId: cp.keyId }));
}

/** Sign a checkpoint for the event `seq` whose hash is `hash`. */
export function signCheckpoint(key: AuditSigningKey, seq: number, hash: string, ts: string): CheckpointRow {
  const unsigned = { seq, hash, ts, keyId: key.keyId };
  const signature = sign(null, checkpointPayload(unsigned), key.privateKey).toString('base64');
  return { ...unsigned, signature };
}

export type CheckpointCheck = 'valid' | 'unknown-key' | 'bad-signature';

/** Check a checkpoint's signature against the known public keys. */
export function checkCheckpoint(cp: CheckpointRow, publicKeys: ReadonlyMap<string, KeyObject>): CheckpointCheck {
  const key = publicKeys.get(cp.keyId);
  if (key === undefined) return 'unknown-key';
  try {
    const ok = verify(null, checkpointPayload(cp), key, Buffer.from(cp.signature, 'base64'));
    return ok ? 'valid' : 'bad-signature';
  } catch {
    return 'bad-signature';
  }
}
