/**
 * The store's public types: the `Store` and `AuditRepository` interfaces that
 * callers see, and the `Database` interface that types every Kysely query.
 *
 * Nothing here names a dialect. SQLite is the embedded default; PostgreSQL is
 * another `Store` implementation behind the same interfaces.
 */
import type { Kysely } from 'kysely';

/** Where the store lives. */
export type StoreOptions =
  | {
      kind: 'sqlite';
      /** Path of the database file; its directory is created (mode 0700) if missing. */
      path: string;
      /**
       * How long a writer waits for a lock held by another process.
       * @default 5000
       */
      busyTimeoutMs?: number;
    }
  | {
      kind: 'postgres';
      /**
       * Connection URL, e.g. `postgres://cordon@db/cordon`. The password may
       * come from PGPASSWORD or ~/.pgpass instead; messages never show it.
       */
      url: string;
      /** Pooled connections for queries (the audit writer holds one more). @default 10 */
      maxConnections?: number;
      /** How long to wait for a connection. @default 5000 */
      connectTimeoutMs?: number;
      /**
       * An audit write that takes longer is cancelled and rolled back (it fails; nothing hangs); any query
       * that gets no answer for this plus 2 s (a dead network) fails with `store-timeout` and its connection
       * is dropped (migrations at open are not bounded). @default 30000
       */
      writeTimeoutMs?: number;
    };

/** One row of `audit_events`, in the shape the repository hands out. */
export interface AuditRow {
  seq: number;
  /** ISO 8601 timestamp, e.g. `2025-01-02T03:04:05.678Z`. */
  ts: string;
  type: string;
  sandbox: string | null;
  agent: string | null;
  actor: string;
  decision: string | null;
  prevHash: string;
  hash: string;
  /** Canonical JSON of the whole event except `hash`; the hash is SHA-256 of this text. */
  body: string;
}

/** One signed checkpoint: the signature covers canonical JSON of `{seq, hash, ts, keyId}`. */
export interface CheckpointRow {
  seq: number;
  hash: string;
  ts: string;
  keyId: string;
  /** Base64 Ed25519 signature. */
  signature: string;
}

/** Filter for {@link AuditRepository.query}. All fields are ANDed. */
export interface AuditQuery {
  /** Only events with `seq > afterSeq`. */
  afterSeq?: number;
  /** Only events with `seq < beforeSeq`. */
  beforeSeq?: number;
  type?: string;
  agent?: string;
  sandbox?: string;
  decision?: string;
  /** Maximum rows returned. */
  limit: number;
  /** @default 'asc' */
  order?: 'asc' | 'desc';
}

export interface AuditRepository {
  /** The event with the highest seq, or undefined for an empty log. */
  head(): Promise<{ seq: number; hash: string } | undefined>;
  /** Insert rows in one transaction: all or nothing. */
  insertEvents(rows: readonly AuditRow[]): Promise<void>;
  /** Up to `limit` rows with `seq > afterSeq`, ordered by seq (keyset pagination). */
  readAfter(afterSeq: number, limit: number): Promise<AuditRow[]>;
  query(filter: AuditQuery): Promise<AuditRow[]>;
  count(): Promise<number>;
  insertCheckpoint(cp: CheckpointRow): Promise<void>;
  /** All checkpoints, ordered by seq. */
  listCheckpoints(): Promise<CheckpointRow[]>;
  /** The checkpoint with the highest seq, or undefined. */
  lastCheckpoint(): Promise<CheckpointRow | undefined>;
}

export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  /** For later layers that add their own tables through migrations. */
  readonly db: Kysely<Database>;
  readonly audit: AuditRepository;
  /**
   * Become the store's one audit writer now rather than at the first audit
   * write, so that a second control plane is refused when it starts.
   * PostgreSQL: takes the writer lock (held until close). SQLite: resolves
   * (writers there are serialised by the file lock, and `cordon up` by the home lock).
   * @throws StoreError `store-locked` when another process is the writer
   */
  claimWriter(): Promise<void>;
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
  /** Close the connection(s). The store cannot be used afterwards. */
  close(): Promise<void>;
}

// ---- Table types (snake_case columns, as stored) ----

export interface AuditEventsTable {
  seq: number;
  ts: string;
  type: string;
  sandbox: string | null;
  agent: string | null;
  actor: string;
  decision: string | null;
  prev_hash: string;
  hash: string;
  body: string;
}

export interface AuditCheckpointsTable {
  seq: number;
  hash: string;
  ts: string;
  key_id: string;
  signature: string;
}

export interface MetaTable {
  key: string;
  value: string;
}

/** Every table the store's own migrations create. */
export interface Database {
  audit_events: AuditEventsTable;
  audit_checkpoints: AuditCheckpointsTable;
  cordon_meta: MetaTable;
}
