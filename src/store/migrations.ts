/**
 * The store's schema as an ordered list of in-code migrations, written with
 * Kysely's schema builder so the same list serves SQLite and PostgreSQL.
 *
 * Never edit a migration that has shipped: add a new one with the next
 * number. A database whose migration table names a migration missing here was
 * written by a newer cordon, and {@link migrateStore} refuses to touch it.
 * Later layers keep their own list and table through {@link migrateLayer}.
 */
import { Migrator, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import { StoreError } from '../errors/index.js';

/** Name of the table where Kysely records the migrations that ran. */
export const MIGRATION_TABLE = 'cordon_migration';

/** Dialect facts the portable migrations need. */
export interface MigrationDialect {
  /** Column type of 64-bit sequence numbers (`integer` is SQLite's rowid alias). */
  seqType: 'integer' | 'bigint';
}

/** Every migration this version of cordon knows, by name (sorted by name when run). */
export function storeMigrations(d: MigrationDialect): Record<string, Migration> {
  return {
    '0001_audit': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('audit_events')
          .addColumn('seq', d.seqType, (c) => c.primaryKey())
          .addColumn('ts', 'text', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('sandbox', 'text')
          .addColumn('agent', 'text')
          .addColumn('actor', 'text', (c) => c.notNull())
          .addColumn('decision', 'text')
          .addColumn('prev_hash', 'text', (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          .addColumn('body', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('audit_events_type').on('audit_events').columns(['type', 'seq']).execute();
        await db.schema.createIndex('audit_events_agent').on('audit_events').columns(['agent', 'seq']).execute();
        await db.schema.createIndex('audit_events_sandbox').on('audit_events').columns(['sandbox', 'seq']).execute();
        await db.schema
          .createTable('audit_checkpoints')
          .addColumn('seq', d.seqType, (c) => c.primaryKey())
          .addColumn('hash', 'text', (c) => c.notNull())
          .addColumn('ts', 'text', (c) => c.notNull())
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('signature', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('cordon_meta')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .execute();
      },
    },
  };
}

/**
 * Bring the store's own schema up to date, refusing a database written by a
 * newer cordon or by another program.
 * @param where how to name the database in messages (a path, or a URL without password)
 */
export async function migrateStore(db: Kysely<any>, d: MigrationDialect, where: string): Promise<void> {
  await runMigrations(db, { migrations: storeMigrations(d), table: MIGRATION_TABLE, where, refuseForeign: true });
}

/**
 * Apply a layer's own migrations, recorded in their own table
 * (`cordon_migration_<layer>`), with the same refusal of unknown (newer) ones.
 * @param layer lower-case layer name, e.g. `approvals`
 * @example
 * await migrateLayer(store.db, 'approvals', { '0001_init': { up: async (db) => { … } } }, 'the store');
 */
export async function migrateLayer(
  db: Kysely<any>,
  layer: string,
  migrations: Record<string, Migration>,
  where = 'the store',
): Promise<void> {
  if (!/^[a-z][a-z0-9_]{0,40}$/.test(layer)) {
    throw new StoreError('store-invalid-layer', `invalid migration layer name ${JSON.stringify(layer)}`, {
      fix: 'use a lower-case name of letters, digits and underscores',
    });
  }
  await runMigrations(db, { migrations, table: `${MIGRATION_TABLE}_${layer}`, where, refuseForeign: false });
}

interface RunOptions {
  migrations: Record<string, Migration>;
  table: string;
  where: string;
  /** Refuse a database with tables but no migration table (someone else's database). */
  refuseForeign: boolean;
}

async function runMigrations(db: Kysely<any>, o: RunOptions): Promise<void> {
  const { applied, otherTables } = await appliedMigrations(db, o.table, o.where);
  if (o.refuseForeign && applied.length === 0 && otherTables.length > 0) {
    throw new StoreError(
      'store-corrupt',
      `${o.where} is not a cordon database: it holds other tables (${otherTables.slice(0, 5).join(', ')})`,
      { fix: 'move it aside or set store.path to a new file; cordon never writes into another program\'s database' },
    );
  }
  const unknown = applied.filter((name) => !(name in o.migrations));
  if (unknown.length > 0) {
    throw new StoreError(
      'store-too-new',
      `${o.where} was written by a newer version of cordon (unknown migrations in ${o.table}: ${unknown.join(', ')}); refusing to open it`,
      {
        fix: 'upgrade cordon to the version that wrote this store, or set store.path to another file',
        details: { unknownMigrations: unknown },
      },
    );
  }
  const provider: MigrationProvider = { getMigrations: async () => o.migrations };
  const migrator = new Migrator({
    db,
    provider,
    migrationTableName: o.table,
    migrationLockTableName: `${o.table}_lock`,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    const why = error instanceof Error ? error.message : String(error);
    throw new StoreError(
      'store-migration-failed',
      `could not update the schema of ${o.where}${failed ? ` (migration ${failed})` : ''}: ${why}`,
      { fix: 'check that the store is writable and not in use by an older cordon; then retry', cause: error },
    );
  }
}

/**
 * Names recorded in the migration table (none when it does not exist yet), and
 * the tables of a database that cordon has never migrated.
 */
async function appliedMigrations(
  db: Kysely<any>,
  table: string,
  where: string,
): Promise<{ applied: string[]; otherTables: string[] }> {
  try {
    const tables = await db.introspection.getTables();
    if (!tables.some((t) => t.name === table)) {
      const otherTables = tables.map((t) => t.name).filter((n) => n !== `${table}_lock`);
      return { applied: [], otherTables };
    }
    const rows = await db.selectFrom(table).select('name').execute();
    return { applied: rows.map((r) => String(r.name)), otherTables: [] };
  } catch (err) {
    throw new StoreError('store-unreadable', `could not read the schema of ${where}: ${(err as Error).message}`, {
      fix: 'check that the file is a cordon store and readable by this user',
      cause: err,
    });
  }
}
