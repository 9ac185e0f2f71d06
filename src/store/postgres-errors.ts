/**
 * What the PostgreSQL back end tells a user when it cannot open a store: the
 * connection URL read without its password (for messages), and driver and
 * server errors mapped to `StoreError`s that say what to do.
 *
 * A password (in the URL, or as its `password` / `sslpassword` parameter)
 * never appears in a message, a fix or a kept cause: every text is scrubbed.
 */
import { StoreError } from '../errors/index.js';

/** A connection URL, taken apart for messages. */
export interface PostgresTarget {
  /** `postgres://user@host:port/database`, never with a password or parameters. */
  description: string;
  host: string;
  port: string;
  database: string;
  user: string;
  /** Texts that must never be shown (the password, raw and decoded). */
  secrets: string[];
}

/** Default server port, when the URL names none. */
const DEFAULT_PORT = '5432';

/**
 * Read a `postgres://` or `postgresql://` URL.
 * @throws StoreError `store-url-invalid` (the message does not repeat the URL: it may hold a password)
 */
export function parsePostgresUrl(url: string): PostgresTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalidUrl('it is not a URL');
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
    throw invalidUrl(`its scheme is ${JSON.stringify(u.protocol.replace(/:$/, ''))}, not postgres`);
  }
  // `user:12/pw@host` parses as host `user`, port 12 and a path holding the rest of the password: never show that.
  const afterAuthority = url.slice(url.indexOf('//') + 2).replace(/^[^/?#]*/, '');
  if (u.username === '' && afterAuthority.includes('@')) {
    throw invalidUrl('an "@" follows the host: a password holding "/", "?" or "#" must be percent-encoded (e.g. "/" as %2F)');
  }
  const decode = (s: string): string => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  };
  const secrets = [u.password, decode(u.password), u.searchParams.get('password'), u.searchParams.get('sslpassword')]
    .filter((s): s is string => typeof s === 'string' && s.length > 0);
  const user = decode(u.username) || process.env['PGUSER'] || '(default user)';
  const host = u.hostname || u.searchParams.get('host') || 'localhost';
  const port = u.port || DEFAULT_PORT;
  const database = decode(u.pathname.replace(/^\//, '')) || (user === '(default user)' ? '(default database)' : user);
  const shownUser = u.username ? `${decode(u.username)}@` : '';
  return { description: `postgres://${shownUser}${host}:${port}/${database}`, host, port, database, user, secrets: [...new Set(secrets)] };
}

function invalidUrl(why: string): StoreError {
  return new StoreError('store-url-invalid', `store.url is not a valid PostgreSQL connection URL: ${why}`, {
    fix: 'set store.url to a URL such as "postgres://cordon@db.internal:5432/cordon" (give the password through PGPASSWORD or ~/.pgpass)',
  });
}

/** Replace every secret of the target in a text. */
export function scrub(text: string, target: Pick<PostgresTarget, 'secrets'>): string {
  let out = text;
  for (const s of target.secrets) out = out.split(s).join('***');
  return out;
}

/** Network failures: the server could not be reached or did not answer in time. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'EPIPE', 'ENOENT']);

/**
 * Map an error met while connecting to (or migrating) a PostgreSQL store.
 * StoreErrors pass through, with their text scrubbed.
 */
export function postgresOpenError(err: unknown, t: PostgresTarget): StoreError {
  const code = String((err as { code?: unknown })?.code ?? '');
  const raw = err instanceof Error ? err.message : String(err);
  const msg = scrub(raw, t);
  // Keep the cause for logs only when it shows no secret.
  const cause = raw === msg ? err : new Error(msg);
  const where = t.description;
  if (err instanceof StoreError) {
    if (raw === msg && scrub(err.fix ?? '', t) === (err.fix ?? '')) return err;
    return new StoreError(err.code as `store-${string}`, msg, { fix: scrub(err.fix ?? '', t), details: err.details, cause });
  }
  const hostPort = `-h ${t.host} -p ${t.port}`;
  if (UNREACHABLE_CODES.has(code) || code === '57P03' || /timeout|terminated unexpectedly|Connection terminated/i.test(raw)) {
    return new StoreError('store-unreachable', `cannot reach the PostgreSQL server of ${where}: ${msg}`, {
      fix: `start PostgreSQL or correct the host and port in store.url; check with \`pg_isready ${hostPort}\``,
      cause,
    });
  }
  if (code === '28P01' || code === '28000' || /password|SASL|SCRAM/i.test(raw)) {
    return new StoreError('store-auth-failed', `PostgreSQL refused the credentials of ${where}: ${msg}`, {
      fix: `check the user and password (PGPASSWORD or ~/.pgpass, or in store.url) and that pg_hba.conf admits this host for user ${t.user}`,
      cause,
    });
  }
  if (code === '3D000') {
    return new StoreError('store-missing', `the database of ${where} does not exist: ${msg}`, {
      fix: `create it, e.g. \`createdb ${hostPort} -O ${t.user} ${t.database}\` (as a PostgreSQL superuser), or correct the database name in store.url`,
      cause,
    });
  }
  if (code === '42501') {
    return new StoreError('store-unwritable', `user ${t.user} may not create cordon's tables in ${where}: ${msg}`, {
      fix: `make ${t.user} the owner of the database (\`ALTER DATABASE ${t.database} OWNER TO ${t.user}\`) or \`GRANT CREATE ON SCHEMA public TO ${t.user}\``,
      cause,
    });
  }
  if (code === '53300') {
    return new StoreError('store-busy', `the PostgreSQL server of ${where} has no connection slots left: ${msg}`, {
      fix: 'raise max_connections on the server, or run fewer cordon processes against it (each holds up to 11 connections)',
      cause,
    });
  }
  return new StoreError('store-open-failed', `cannot open the store ${where}: ${msg}`, {
    fix: 'check store.url and the PostgreSQL server log, then retry',
    cause,
  });
}

/** The store was written by a newer cordon, or is another program's database: say so in PostgreSQL terms. */
export function withPostgresFix(err: StoreError, t: PostgresTarget): StoreError {
  const fixes: Record<string, string> = {
    'store-too-new': 'upgrade cordon to the version that wrote this store, or point store.url at another database',
    'store-corrupt': 'point store.url at a database created for cordon alone (e.g. `createdb -O cordon cordon`); cordon never writes into another program\'s tables',
    'store-unreadable': `check that ${t.user} may read the tables of ${t.database}`,
  };
  const fix = fixes[err.code];
  if (fix === undefined) return err;
  return new StoreError(err.code as `store-${string}`, scrub(err.message, t), { fix, details: err.details, cause: err.cause });
}
