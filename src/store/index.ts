/**
 * The store: where cordon keeps its state (audit log, checkpoints, metadata,
 * and the tables later layers add through migrations).
 *
 * @example
 * const store = await openStore({ kind: 'sqlite', path: join(cordonHome(), 'cordon.db') });
 * const head = await store.audit.head();
 * await store.close();
 */
import { StoreError } from '../errors/index.js';
import { openPostgresStore } from './postgres.js';
import { openSqliteStore } from './sqlite.js';
import type { Store, StoreOptions } from './types.js';

export type {
  AuditQuery,
  AuditRepository,
  AuditRow,
  CheckpointRow,
  Database,
  Store,
  StoreOptions,
} from './types.js';
export { INSERT_CHUNK_ROWS } from './kysely-store.js';
export { MIGRATION_TABLE, migrateLayer } from './migrations.js';

/**
 * Open a store, creating and migrating it as needed.
 * @throws StoreError `store-corrupt` (not a cordon database), `store-unwritable`,
 *   `store-too-new` (written by a newer cordon), `store-unsupported` (unknown kind);
 *   PostgreSQL also `store-url-invalid`, `store-unreachable`, `store-auth-failed`,
 *   `store-missing` (no such database), `store-busy` (no connection slots)
 */
export async function openStore(opts: StoreOptions): Promise<Store> {
  switch (opts.kind) {
    case 'sqlite':
      return openSqliteStore(opts);
    case 'postgres':
      return openPostgresStore(opts);
    default: {
      const kind = (opts as { kind?: unknown }).kind;
      throw new StoreError('store-unsupported', `unknown store kind ${JSON.stringify(kind)}`, {
        fix: 'set store.kind to sqlite or postgres',
      });
    }
  }
}
