/**
 * The PostgreSQL store on a real server started by the test (see
 * testing/postgres.ts): the shared store suite, the refusals (bad
 * credentials, missing database, no right to create tables, another
 * program's tables), the bounded pool, and the single-writer lock.
 * Skips, saying why, where no PostgreSQL binaries are installed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import pgDriver from 'pg';
import { StoreError } from '../errors/index.js';
import { openStore, type Store } from './index.js';
import { WRITER_LOCK_KEY } from './postgres.js';
import { row, runStoreContract } from './testing/contract.js';
import { postgresSkipReason, startTestPostgres, TEST_PASSWORD, type TestPostgres } from './testing/postgres.js';

const skip = postgresSkipReason();
let server: TestPostgres | undefined;
let dbCount = 0;

before(async () => {
  if (skip === undefined) server = await startTestPostgres();
});
after(async () => {
  await server?.stop();
});

function pg(): TestPostgres {
  if (server === undefined) throw new Error('the test PostgreSQL server did not start');
  return server;
}

/** A new database owned by the test role, and its URL. */
async function freshUrl(): Promise<string> {
  return pg().createDatabase(`cordon_t${++dbCount}`);
}

runStoreContract({
  kind: 'postgres',
  skip: () => skip,
  async fresh() {
    const url = await freshUrl();
    return { open: () => openStore({ kind: 'postgres', url }), cleanup: async () => undefined };
  },
});

const opts = { skip: skip ?? false };

/** Assert a StoreError with this code, and that nothing shown carries the password. */
function refusal(code: string, message: RegExp, fix: RegExp, password = TEST_PASSWORD) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof StoreError, `expected StoreError, got ${inspect(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    assert.match(err.fix ?? '', fix);
    for (const shown of [err.message, err.fix ?? '', JSON.stringify(err), inspect(err, { depth: 6 })]) {
      assert.ok(!shown.includes(password), `the password leaked: ${shown}`);
    }
    return true;
  };
}

test('a PostgreSQL store that cannot be opened is refused with a code and a fix', opts, async (t) => {
  await freshUrl(); // makes the test role exist
  await pg().admin('create database cordon_admin_owned');
  await pg().admin('create database cordon_foreign owner cordon_app');
  await pg().admin('create table invoices (id bigint primary key, total numeric)', [], 'cordon_foreign');
  const cases: { name: string; url: () => string; code: string; message: RegExp; fix: RegExp }[] = [
    {
      name: 'a wrong password',
      url: () => pg().appUrl('cordon_admin_owned', 'wrong-Passw0rd'),
      code: 'store-auth-failed',
      message: /refused the credentials of postgres:\/\/cordon_app@127\.0\.0\.1:\d+\/cordon_admin_owned: password authentication failed/,
      fix: /PGPASSWORD or ~\/\.pgpass.*pg_hba\.conf/,
    },
    {
      name: 'a database that does not exist',
      url: () => pg().appUrl('no_such_db'),
      code: 'store-missing',
      message: /database of postgres:\/\/cordon_app@127\.0\.0\.1:\d+\/no_such_db does not exist/,
      fix: /createdb -h 127\.0\.0\.1 -p \d+ -O cordon_app no_such_db/,
    },
    {
      name: 'a user who may not create tables (PostgreSQL 15: no CREATE on schema public)',
      url: () => pg().appUrl('cordon_admin_owned'),
      code: 'store-unwritable',
      message: /user cordon_app may not create cordon's tables .*permission denied/,
      fix: /OWNER TO cordon_app|GRANT CREATE ON SCHEMA public TO cordon_app/,
    },
    {
      name: 'a database that holds another program\'s tables',
      url: () => pg().appUrl('cordon_foreign'),
      code: 'store-corrupt',
      message: /not a cordon database: it holds other tables \(invoices\)/,
      fix: /store\.url at a database created for cordon alone/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const password = c.code === 'store-auth-failed' ? 'wrong-Passw0rd' : TEST_PASSWORD;
      await assert.rejects(openStore({ kind: 'postgres', url: c.url() }), refusal(c.code, c.message, c.fix, password));
    });
  }
  const tables = await pg().admin<{ n: string }>("select count(*)::text as n from pg_tables where schemaname = 'public'", [], 'cordon_foreign');
  assert.equal(tables[0]?.n, '1', 'nothing was created beside the other program\'s table');
});

test('the pool is bounded, the writer holds one more connection, and close() ends them all', opts, async () => {
  const url = await freshUrl();
  const store = await openStore({ kind: 'postgres', url, maxConnections: 2 });
  const sessions = async (): Promise<number> => {
    const rows = await pg().admin<{ n: string }>(
      'select count(*)::text as n from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()', [url.split('/').pop()],
    );
    return Number(rows[0]?.n);
  };
  try {
    await store.audit.insertEvents([row(1)]);
    let peak = 0;
    await Promise.all(Array.from({ length: 12 }, async () => {
      await store.db.selectNoFrom((eb) => eb.fn<number>('pg_sleep', [eb.val(0.02)]).as('s')).execute();
      peak = Math.max(peak, await sessions());
    }));
    assert.ok(peak <= 3, `at most 2 pooled + 1 writer connection, saw ${peak}`);
  } finally {
    await store.close();
  }
  for (let i = 0; i < 50 && (await sessions()) > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await sessions(), 0, 'no session of the store is left after close()');
});

/** Audit rows written by `store`, as seqs. */
const seqs = async (store: Store): Promise<number[]> => (await store.audit.readAfter(0, 100)).map((r) => r.seq);

test('one writer per database: claimWriter refuses a second writer; a second process may read but its audit writes are refused until the lock is free', opts, async () => {
  const url = await freshUrl();
  const a = await openStore({ kind: 'postgres', url });
  let b = await openStore({ kind: 'postgres', url });
  try {
    await b.claimWriter(); // a control plane claims the writer at start…
    await assert.rejects(a.claimWriter(), (err: unknown) => err instanceof StoreError && err.code === 'store-locked', '…so a second one is refused at start');
    await b.close();
    b = await openStore({ kind: 'postgres', url });
    await a.claimWriter();
    await a.claimWriter(); // idempotent for the holder
    await a.audit.insertEvents([row(1), row(2)]);
    assert.deepEqual(await seqs(b), [1, 2], 'the second opener reads');
    assert.deepEqual(await b.audit.head(), { seq: 2, hash: row(2).hash });
    const locked = refusal('store-locked', /another cordon process writes the audit log of postgres:\/\/cordon_app@.*server pid \d+.*may read it but not write it/, /one control plane per store/);
    await assert.rejects(b.audit.insertEvents([row(3)]), locked);
    await assert.rejects(b.audit.insertCheckpoint({ seq: 2, hash: row(2).hash, ts: 't', keyId: 'k', signature: 's' }), locked);
    assert.deepEqual(await seqs(a), [1, 2], 'nothing of the refused writes landed');
    await a.close();
    await b.audit.insertEvents([row(3)]);
    assert.deepEqual(await seqs(b), [1, 2, 3], 'the lock is free once its holder closed');
  } finally {
    await a.close();
    await b.close();
  }
});

test('a writer whose locked session was killed must win the lock again before it writes', opts, async () => {
  const url = await freshUrl();
  const a = await openStore({ kind: 'postgres', url });
  const b = await openStore({ kind: 'postgres', url });
  const hi = Number(BigInt(WRITER_LOCK_KEY) >> 32n);
  const lo = Number(BigInt(WRITER_LOCK_KEY) & 0xffffffffn);
  const killHolder = async (): Promise<void> => {
    const rows = await pg().admin<{ ok: boolean }>(
      "select pg_terminate_backend(pid) as ok from pg_locks where locktype = 'advisory' and granted and classid = $1 and objid = $2",
      [hi, lo],
    );
    assert.deepEqual(rows.map((r) => r.ok), [true], 'exactly one session held the lock');
  };
  try {
    await a.audit.insertEvents([row(1)]);
    await killHolder();
    await b.audit.insertEvents([row(2)]); // the lock was free: b takes it
    await assert.rejects(a.audit.insertEvents([row(3)]), (err: unknown) => err instanceof Error && /store-locked|another cordon process/.test(`${(err as StoreError).code} ${err.message}`));
    await b.close();
    await a.audit.insertEvents([row(3)]); // a connects again and wins the free lock
    assert.deepEqual(await seqs(a), [1, 2, 3]);
  } finally {
    await a.close();
    await b.close();
  }
});

test('a write that meets a seq another writer already used fails whole (the chain cannot fork)', opts, async () => {
  const url = await freshUrl();
  const a = await openStore({ kind: 'postgres', url });
  try {
    await a.audit.insertEvents([row(1), row(2)]);
    await assert.rejects(a.audit.insertEvents([row(3), row(2, { prevHash: 'f'.repeat(64) })]), /duplicate key|unique/);
    assert.deepEqual(await seqs(a), [1, 2]);
    await a.audit.insertEvents([row(3)]);
    assert.deepEqual(await seqs(a), [1, 2, 3], 'the writer connection still works after a refused batch');
  } finally {
    await a.close();
  }
});

test('the password can stay out of store.url: PGPASSWORD or a password file (PGPASSFILE, ~/.pgpass)', opts, async (t) => {
  const url = await freshUrl();
  const bare = url.replace(`:${TEST_PASSWORD}@`, '@');
  assert.ok(!bare.includes(TEST_PASSWORD));
  const dir = mkdtempSync(join(tmpdir(), 'cordon-pgpass-'));
  const saved = { PGPASSWORD: process.env['PGPASSWORD'], PGPASSFILE: process.env['PGPASSFILE'] };
  const restore = (): void => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  const cases: { name: string; env: () => Record<string, string>; refused?: true }[] = [
    { name: 'no password anywhere is refused as an authentication failure', env: () => ({ PGPASSFILE: join(dir, 'absent') }), refused: true },
    { name: 'PGPASSWORD', env: () => ({ PGPASSWORD: TEST_PASSWORD }) },
    {
      name: 'a password file',
      env: () => {
        const file = join(dir, 'pgpass');
        writeFileSync(file, `127.0.0.1:${pg().port}:*:cordon_app:${TEST_PASSWORD}\n`);
        chmodSync(file, 0o600);
        return { PGPASSFILE: file };
      },
    },
  ];
  try {
    for (const c of cases) {
      await t.test(c.name, async () => {
        restore();
        delete process.env['PGPASSWORD'];
        delete process.env['PGPASSFILE'];
        Object.assign(process.env, c.env());
        if (c.refused) {
          await assert.rejects(openStore({ kind: 'postgres', url: bare }), refusal('store-auth-failed', /refused the credentials/, /PGPASSWORD or ~\/\.pgpass/));
          return;
        }
        const store = await openStore({ kind: 'postgres', url: bare });
        try {
          await store.audit.insertEvents([row(1)]);
          assert.equal(await store.audit.count(), 1);
        } finally {
          await store.close();
          await pg().admin('delete from audit_events', [], url.split('/').pop());
        }
      });
    }
  } finally {
    restore();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an audit write blocked by a table lock is cancelled at writeTimeoutMs and rolled back, not left hanging', opts, async () => {
  const url = await freshUrl();
  const store = await openStore({ kind: 'postgres', url, writeTimeoutMs: 300 });
  const holder = new pgDriver.Client({ connectionString: pg().adminUrl(url.split('/').pop()) });
  await holder.connect();
  try {
    await store.audit.insertEvents([row(1)]);
    await holder.query('begin');
    await holder.query('lock table audit_events in access exclusive mode');
    const started = Date.now();
    await assert.rejects(store.audit.insertEvents([row(2)]), refusal('store-timeout', /cancelled after 300 ms .*rolled back/, /pg_locks/));
    assert.ok(Date.now() - started < 3000, `refused in ${Date.now() - started} ms`);
    await holder.query('rollback');
    assert.deepEqual(await seqs(store), [1], 'the cancelled write left nothing');
    await store.audit.insertEvents([row(2)]);
    assert.deepEqual(await seqs(store), [1, 2], 'the writer still holds its session and lock');
  } finally {
    await holder.end();
    await store.close();
  }
});

test('a write whose session is killed mid-statement fails, and the next write reconnects and retakes the lock', opts, async () => {
  const url = await freshUrl();
  const store = await openStore({ kind: 'postgres', url });
  const holder = new pgDriver.Client({ connectionString: pg().adminUrl(url.split('/').pop()) });
  await holder.connect();
  try {
    await store.audit.insertEvents([row(1)]);
    await holder.query('begin');
    await holder.query('lock table audit_events in access exclusive mode');
    const blocked = store.audit.insertEvents([row(2)]);
    const outcome = blocked.then(() => 'written', (err: Error) => err.message);
    let killed: { ok: boolean }[] = [];
    for (let i = 0; i < 50 && killed.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      killed = await pg().admin<{ ok: boolean }>(
        "select pg_terminate_backend(pid) as ok from pg_stat_activity where datname = $1 and wait_event_type = 'Lock' and query like 'insert into \"audit_events\"%'",
        [url.split('/').pop()],
      );
    }
    assert.deepEqual(killed.map((k) => k.ok), [true], 'the waiting writer session was found and killed');
    assert.match(await outcome, /terminat/i, 'the interrupted write fails');
    await holder.query('rollback');
    await store.audit.insertEvents([row(2)]);
    assert.deepEqual(await seqs(store), [1, 2], 'the next write reconnected, retook the lock and wrote');
  } finally {
    await holder.end();
    await store.close();
  }
});
