/**
 * The append side of the audit log, with group commit.
 *
 * `append` validates an event and renders its body (canonical JSON, without
 * the seq and prevHash) at once, then queues it; one flush (on the next
 * `setImmediate`, so appends made in the same turn of the event loop, and
 * those made while a write is under way, share it) numbers, chains and
 * hashes up to `maxBatch` queued events from the last committed head and
 * hands them to the store as one transaction. On SQLite that is one cached
 * prepared INSERT per event inside one better-sqlite3 transaction, with no
 * query builder on the way.
 *
 * An append resolves only once its event is committed (SQLite WAL with
 * synchronous=NORMAL: it survives a crash of cordon; a power loss may drop
 * the last commits). If the write fails, every append of that batch rejects
 * with `audit-write-failed`, the transaction is rolled back, and the head
 * stays where it was, so a failed batch leaves neither a gap nor a fork; the
 * next batch chains on the last committed event.
 * A checkpoint sealing the head is signed once `checkpointEvery` events are
 * unsealed, every `checkpointIntervalMs` while any are, and on `close()`.
 *
 * Events that are not recorded (a failed batch, or an append refused up
 * front) are counted in `droppedEvents` and reported to `onDropped` (see
 * dropped.ts), so that callers which cannot wait for an event (they log
 * after the fact and ignore the rejection) do not lose it unseen. Nothing of
 * this runs while appends succeed.
 */
import { join } from 'node:path';
import { AuditError, KeyError } from '../errors/index.js';
import type { AuditRow, CheckpointRow, Store } from '../store/index.js';
import { signCheckpoint } from './checkpoint.js';
import { DROPPED_CODES, droppedReport, type DroppedCode, type DroppedReport } from './dropped.js';
import {
  GENESIS_HASH,
  composeBody,
  prepareEvent,
  sha256Hex,
  toEvent,
  type AuditEvent,
  type AuditEventInput,
  type PreparedEvent,
} from './event.js';
import { hasRetiredPublicKey, KEY_ROTATED_EVENT, loadOrCreateSigningKey, PRIVATE_KEY_FILE, type AuditSigningKey } from './keys.js';
import { queryEvents, type AuditEventQuery } from './query.js';
import { ChainChecker } from './verify.js';

export interface AuditLogOptions {
  store: Store;
  /** Directory of the checkpoint signing key (created mode 0700). */
  keyDir: string;
  /** Sign a checkpoint (at the head) once this many events are unsealed. @default 1000 */
  checkpointEvery?: number;
  /** Sign a checkpoint this often while some events are unsealed. @default 1000 */
  checkpointIntervalMs?: number;
  /** Clock for event and checkpoint timestamps. @default () => new Date() */
  now?: () => Date;
  /**
   * Events written per transaction at most. The write runs synchronously on
   * SQLite, so this also bounds how long one flush holds the event loop
   * (about 4 ms for 1,000 events on the reference machine).
   * @default 1000
   */
  maxBatch?: number;
  /** Appends waiting to be written at most; beyond it appends are refused. @default 100000 */
  maxQueued?: number;
  /**
   * Create a new signing key even though the store holds checkpoints signed by
   * a key that is missing now (older checkpoints then verify only with the old .pub).
   * @default false
   */
  allowNewKey?: boolean;
  /**
   * Opened to record a key rotation (`rotate.ts`): the key change it finds is
   * the one being recorded, so it is not reported. @default false
   */
  recordingRotation?: boolean;
  /**
   * Told of every event that is not recorded: each batch whose write failed
   * (`audit-write-failed`) and each append refused up front (`audit-closed`,
   * `audit-overloaded`, `audit-invalid-event`), with the count, the events'
   * types, sandboxes and agents (never their data), the message and the fix.
   * Called before the appends reject. It must not block. Drops it causes
   * itself (an append from the hook that is refused) are counted, not
   * reported again. If it throws, the appends reject as they would anyway and
   * the hook's error becomes a process warning (`CORDON_AUDIT_HOOK_FAILED`).
   * See `droppedEventLines` for one that writes rate-limited lines to stderr.
   * @default none: dropped events are only counted in `droppedEvents`
   */
  onDropped?: (report: DroppedReport) => void;
}

/** Writes of one batch when another writer keeps taking its seqs. */
const MAX_WRITE_ATTEMPTS = 3;

type Resolved = Required<Pick<AuditLogOptions, 'store' | 'checkpointEvery' | 'checkpointIntervalMs' | 'now' | 'maxBatch' | 'maxQueued'>>;

function resolveOptions(o: AuditLogOptions): Resolved {
  return {
    store: o.store,
    now: o.now ?? (() => new Date()),
    checkpointEvery: positiveInt(o.checkpointEvery ?? 1000, 'checkpointEvery'),
    checkpointIntervalMs: positiveInt(o.checkpointIntervalMs ?? 1000, 'checkpointIntervalMs'),
    maxBatch: positiveInt(o.maxBatch ?? 1000, 'maxBatch'),
    maxQueued: positiveInt(o.maxQueued ?? 100_000, 'maxQueued'),
  };
}

interface Pending {
  event: PreparedEvent;
  resolve: (e: AuditEvent) => void;
  reject: (err: unknown) => void;
}

export class AuditLog {
  readonly #store: Store;
  readonly #key: AuditSigningKey;
  readonly #now: () => Date;
  readonly #every: number;
  readonly #maxBatch: number;
  readonly #maxQueued: number;
  #queue: Pending[] = [];
  #draining: Promise<void> | undefined;
  #head: { seq: number; hash: string };
  #sealedSeq: number;
  #checkpointWanted = false;
  #checkpointFailedAt = -1;
  #closed = false;
  #closing: Promise<void> | undefined;
  #timer: NodeJS.Timeout;
  readonly #onDropped: ((report: DroppedReport) => void) | undefined;
  #dropped = 0;
  #inHook = false;

  private constructor(
    c: Resolved,
    key: AuditSigningKey,
    head: { seq: number; hash: string },
    sealedSeq: number,
    onDropped: ((report: DroppedReport) => void) | undefined,
  ) {
    this.#onDropped = onDropped;
    this.#store = c.store;
    this.#key = key;
    this.#now = c.now;
    this.#every = c.checkpointEvery;
    this.#maxBatch = c.maxBatch;
    this.#maxQueued = c.maxQueued;
    this.#head = head;
    this.#sealedSeq = sealedSeq;
    this.#timer = setInterval(() => {
      if (this.#head.seq > this.#sealedSeq) {
        this.#checkpointWanted = true;
        this.#kick();
      }
    }, c.checkpointIntervalMs);
    this.#timer.unref();
  }

  /**
   * Open the log on a store: load (or create) the signing key, read the head,
   * and check the events a previous run left unsealed before sealing them.
   * @throws KeyError for a missing, corrupt or too-open key; AuditError
   *   `audit-chain-broken` when the unsealed tail does not chain to the last checkpoint
   */
  static async open(o: AuditLogOptions): Promise<AuditLog> {
    const c = resolveOptions(o);
    const head = (await o.store.audit.head()) ?? { seq: 0, hash: GENESIS_HASH };
    const last = await o.store.audit.lastCheckpoint();
    // A rotation (see rotate.ts) keeps the old key's .pub under its keyId before it replaces the
    // key. Looked up before loading, which files away a stale .pub itself.
    const retired = last !== undefined && hasRetiredPublicKey(o.keyDir, last.keyId);
    const key = loadKey(o, last);
    if (last !== undefined && last.keyId !== key.keyId && o.allowNewKey !== true && o.recordingRotation !== true) {
      await warnKeyChanged(o, last, key.keyId, retired);
    }
    await checkUnsealedTail(o.store, last, head);
    return new AuditLog(c, key, head, last?.seq ?? 0, o.onDropped);
  }

  /** The last committed event (seq 0 and the genesis hash for an empty log). */
  get head(): { seq: number; hash: string } {
    return { ...this.#head };
  }

  /** Events not recorded since the log was opened (failed writes and refused appends; see `onDropped`). */
  get droppedEvents(): number {
    return this.#dropped;
  }

  /** keyId of the checkpoint signing key. */
  get keyId(): string {
    return this.#key.keyId;
  }

  /** Public key (SPKI PEM) that verifies this log's checkpoints. */
  get publicKeyPem(): string {
    return this.#key.publicKeyPem;
  }

  /**
   * Record an event. Resolves once it is durable in the store.
   *
   * `append` takes `input.data` over: it is read and rendered before `append`
   * returns, never copied, and becomes the returned event's `data`. Pass plain
   * JSON built for the event (no defensive deep copy is needed); pass a copy
   * only if you keep changing the object afterwards.
   * @throws AuditError `audit-invalid-event`, `audit-write-failed`, `audit-overloaded`, `audit-closed`
   */
  append(input: AuditEventInput): Promise<AuditEvent> {
    if (this.#closed) {
      return this.#refuse(
        new AuditError('audit-closed', 'the audit log is closed; the event was not recorded', {
          fix: 'open the audit log again (restart cordon) before recording events',
        }),
        input,
      );
    }
    if (this.#queue.length >= this.#maxQueued) {
      return this.#refuse(
        new AuditError('audit-overloaded', `${this.#queue.length} audit events are waiting to be written; refusing more`, {
          fix: 'the store is too slow or stuck: check the disk, or raise maxQueued',
        }),
        input,
      );
    }
    let event: PreparedEvent;
    try {
      event = prepareEvent(input, this.#now().toISOString());
    } catch (err) {
      return this.#refuse(err, input);
    }
    return new Promise<AuditEvent>((resolve, reject) => {
      this.#queue.push({ event, resolve, reject });
      this.#kick();
    });
  }

  /** Count and report one append refused up front, then reject it with `err` unchanged. */
  #refuse(err: unknown, input: unknown): Promise<never> {
    this.#reportDropped(err, [input]);
    return Promise.reject(err);
  }

  /**
   * Count events that were not recorded and tell `onDropped`. Never throws:
   * a failing hook (or report) becomes a process warning.
   */
  #reportDropped(err: unknown, inputs: readonly unknown[]): void {
    this.#dropped += inputs.length;
    const hook = this.#onDropped;
    // A drop caused by the hook itself (say it appends, and the log is closed) is counted, not reported again.
    if (hook === undefined || this.#inHook) return;
    const warn = (cause: unknown): void => {
      let why: string;
      try {
        why = String((cause as Error)?.message ?? cause);
      } catch {
        why = 'it threw a value that has no string form'; // e.g. Object.create(null): must not throw here
      }
      process.emitWarning(`the audit onDropped hook failed (${inputs.length} dropped event(s) not reported): ${why}`, {
        code: 'CORDON_AUDIT_HOOK_FAILED',
      });
    };
    this.#inHook = true;
    try {
      const result: unknown = hook(droppedReport(droppedCodeOf(err), err, inputs));
      // A hook that returns a promise anyway must not leave an unhandled rejection behind.
      if (result instanceof Promise) result.catch(warn);
    } catch (cause) {
      warn(cause);
    } finally {
      this.#inHook = false;
    }
  }

  /** Events matching a filter (see {@link queryEvents}). */
  query(filter: AuditEventQuery = {}): Promise<AuditEvent[]> {
    return queryEvents(this.#store, filter);
  }

  /** Seal every committed event now (after pending appends are written). */
  async checkpoint(): Promise<void> {
    this.#checkpointWanted = true;
    this.#kick();
    while (this.#draining) await this.#draining;
  }

  /**
   * Write every queued event, sign a final checkpoint and stop. Appends made
   * afterwards reject with `audit-closed`. The store stays open.
   * @throws AuditError `audit-checkpoint-failed` when the final checkpoint cannot be written
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      clearInterval(this.#timer);
      while (this.#draining !== undefined || this.#queue.length > 0) {
        if (this.#draining === undefined) this.#kick();
        await this.#draining;
      }
      if (this.#head.seq > this.#sealedSeq && !(await this.#writeCheckpoint())) {
        throw new AuditError('audit-checkpoint-failed', `could not sign the shutdown checkpoint at seq ${this.#head.seq}`, {
          fix: 'the events are stored; the next start seals them. Check the store if this repeats',
        });
      }
    })();
    return this.#closing;
  }

  /** Start a drain on the next turn of the event loop unless one is running. */
  #kick(): void {
    if (this.#draining !== undefined) return;
    this.#draining = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.#drain())
      .catch((cause: unknown) => {
        // Not expected (writes catch their own errors); fail closed all the same.
        const err = new AuditError('audit-write-failed', `the audit writer failed: ${String(cause)}`, {
          fix: 'restart cordon; report this as a bug',
          cause,
        });
        const lost = this.#queue.splice(0);
        this.#reportDropped(err, lost.map((p) => p.event.input));
        for (const p of lost) p.reject(err);
      })
      .finally(() => {
        this.#draining = undefined;
        if (this.#queue.length > 0 || this.#checkpointDue()) this.#kick();
      });
  }

  async #drain(): Promise<void> {
    for (;;) {
      if (this.#queue.length > 0) await this.#writeBatch(this.#queue.splice(0, this.#maxBatch));
      if (this.#checkpointDue()) await this.#writeCheckpoint();
      if (this.#queue.length === 0) return;
    }
  }

  #checkpointDue(): boolean {
    const unsealed = this.#head.seq - this.#sealedSeq;
    if (unsealed <= 0) return false;
    if (this.#checkpointWanted) return true;
    // After a failed checkpoint, wait for new events (or the timer) before retrying.
    return unsealed >= this.#every && this.#checkpointFailedAt !== this.#head.seq;
  }

  async #writeBatch(batch: Pending[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      let rows: AuditRow[] | undefined;
      try {
        rows = this.#chain(batch);
        await this.#store.audit.insertEvents(rows);
      } catch (cause) {
        // A store that lost its reply after committing (a network store) failed a write that landed:
        // chaining the batch again would record every event twice.
        if (rows !== undefined && (await this.#landed(rows))) return this.#committed(batch, rows);
        // Another writer on the same store took these seqs: chain again on its head (bounded).
        if (attempt < MAX_WRITE_ATTEMPTS && (await this.#refreshHead())) continue;
        const err = new AuditError(
          'audit-write-failed',
          `could not write ${batch.length} audit event(s): ${(cause as Error)?.message ?? String(cause)}; the actions they record must not proceed`,
          { fix: 'check the store (disk space, permissions, locks held by another process); later events are retried', cause },
        );
        this.#reportDropped(err, batch.map((p) => p.event.input));
        for (const p of batch) p.reject(err);
        return;
      }
      return this.#committed(batch, rows);
    }
  }

  /** The batch is in the store as `rows`: move the head and resolve each append. */
  #committed(batch: Pending[], rows: AuditRow[]): void {
    const last = rows[rows.length - 1]!;
    this.#head = { seq: last.seq, hash: last.hash };
    for (let i = 0; i < batch.length; i++) {
      const r = rows[i]!;
      batch[i]!.resolve(toEvent(batch[i]!.event, r.seq, r.prevHash, r.hash));
    }
  }

  /** After a failed write: are exactly these rows in the store (same seqs, same hashes)? False when that cannot be read. */
  async #landed(rows: AuditRow[]): Promise<boolean> {
    try {
      const stored = await this.#store.audit.readAfter(rows[0]!.seq - 1, rows.length);
      return stored.length === rows.length && stored.every((r, i) => r.seq === rows[i]!.seq && r.hash === rows[i]!.hash);
    } catch {
      return false; // unknown: the appends fail, as any failed write
    }
  }

  /** Number, link and hash a batch from the committed head. */
  #chain(batch: Pending[]): AuditRow[] {
    let seq = this.#head.seq;
    let prevHash = this.#head.hash;
    const rows: AuditRow[] = new Array(batch.length);
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i]!.event;
      seq++;
      const body = composeBody(p, seq, prevHash);
      const hash = sha256Hex(body);
      const { input } = p;
      rows[i] = {
        seq,
        ts: p.ts,
        type: input.type,
        sandbox: input.sandbox ?? null,
        agent: input.agent ?? null,
        actor: input.actor,
        decision: input.decision ?? null,
        prevHash,
        hash,
        body,
      };
      prevHash = hash;
    }
    return rows;
  }

  /** After a failed write, take the store's head if another writer moved it on. */
  async #refreshHead(): Promise<boolean> {
    try {
      const h = await this.#store.audit.head();
      if (h === undefined || h.seq <= this.#head.seq) return false;
      this.#head = h;
      return true;
    } catch {
      return false; // the store is still failing; keep the last committed head
    }
  }

  /** Sign and store a checkpoint at the head. Resolves to false when it could not be stored. */
  async #writeCheckpoint(): Promise<boolean> {
    const { seq, hash } = this.#head;
    this.#checkpointWanted = false;
    if (seq <= this.#sealedSeq) return true;
    try {
      const cp: CheckpointRow = signCheckpoint(this.#key, seq, hash, this.#now().toISOString());
      await this.#store.audit.insertCheckpoint(cp);
    } catch {
      this.#checkpointFailedAt = seq;
      return false;
    }
    this.#sealedSeq = seq;
    return true;
  }
}

/**
 * Say that the key signing now is not the one that sealed the last
 * checkpoint (not an error by itself), unless the log already records that
 * rotation. A retired .pub of the old key without the recorded rotation is
 * a rotation that stopped half-way, or a file someone else put there: it
 * changes what is said, never whether it is said.
 */
async function warnKeyChanged(o: AuditLogOptions, last: CheckpointRow, keyId: string, retired: boolean): Promise<void> {
  const rotations = await queryEvents(o.store, { type: KEY_ROTATED_EVENT, afterSeq: last.seq - 1, limit: 100 });
  if (rotations.some((e) => e.data.oldKeyId === last.keyId && e.data.newKeyId === keyId)) return;
  const keyFile = join(o.keyDir, PRIVATE_KEY_FILE);
  if (retired) {
    process.emitWarning(
      `audit checkpoints up to seq ${last.seq} were signed by key ${last.keyId}, which ${keyFile} (key ${keyId}) replaced in a rotation the log does not record yet; `
      + 'run `cordon audit rotate-key` to record it. If nobody rotated the key, someone else changed the key directory: check it',
      { code: 'CORDON_AUDIT_ROTATION_UNFINISHED' },
    );
    return;
  }
  process.emitWarning(`audit checkpoints up to seq ${last.seq} were signed by key ${last.keyId}; ${keyFile} is key ${keyId}`, { code: 'CORDON_AUDIT_KEY_CHANGED' });
}

/** Load the signing key; a missing one is created only if nothing was signed yet (or allowNewKey). */
function loadKey(o: AuditLogOptions, last: CheckpointRow | undefined): AuditSigningKey {
  try {
    return loadOrCreateSigningKey(o.keyDir, { create: last === undefined || o.allowNewKey === true });
  } catch (err) {
    if (err instanceof KeyError && err.code === 'key-missing' && last !== undefined) {
      const path = join(o.keyDir, PRIVATE_KEY_FILE);
      throw new KeyError('key-missing', `the audit signing key ${path} is missing, but the store holds checkpoints signed by key ${last.keyId}`, {
        fix: `restore ${path} from backup; if it is lost for good, start with allowNewKey (checkpoints of key ${last.keyId} then verify only with its .pub file)`,
        details: { path, keyId: last.keyId },
      });
    }
    throw err;
  }
}

/** Check that the events after the last checkpoint chain to it before they get sealed. */
async function checkUnsealedTail(
  store: Store,
  last: CheckpointRow | undefined,
  head: { seq: number; hash: string },
): Promise<void> {
  const from = last?.seq ?? 0;
  if (head.seq <= from && last === undefined) return;
  const checker = new ChainChecker(from, last?.hash ?? GENESIS_HASH);
  if (last !== undefined) {
    const [sealedRow] = await store.audit.query({ afterSeq: last.seq - 1, beforeSeq: last.seq + 1, limit: 1 });
    if (sealedRow === undefined || sealedRow.hash !== last.hash) throw chainBroken(last.seq, 'it no longer matches its signed checkpoint');
  }
  for (let after = from; after < head.seq; ) {
    const page = await store.audit.readAfter(after, 5000);
    if (page.length === 0) break;
    for (const row of page) {
      const finding = checker.check(row);
      if (finding !== undefined) throw chainBroken(finding.seq, finding.message);
    }
    after = page[page.length - 1]!.seq;
  }
}

function chainBroken(seq: number, why: string): AuditError {
  return new AuditError('audit-chain-broken', `the audit log is damaged at seq ${seq}: ${why}; refusing to append to it`, {
    fix: 'run `cordon audit verify` for the full report, keep a copy of the store as evidence, and start on a new store path',
    details: { seq },
  });
}

/** The code a refusal is reported under: its own when it is one of the dropped codes, else an invalid event. */
function droppedCodeOf(err: unknown): DroppedCode {
  const code = err instanceof AuditError ? err.code : undefined;
  return (DROPPED_CODES as readonly string[]).includes(code ?? '') ? (code as DroppedCode) : 'audit-invalid-event';
}

function positiveInt(n: number, name: string): number {
  if (!Number.isInteger(n) || n < 1) {
    throw new AuditError('audit-invalid-option', `${name} must be a positive integer (got ${n})`, {
      fix: `set ${name} to an integer ≥ 1`,
    });
  }
  return n;
}
