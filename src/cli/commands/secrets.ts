/**
 * `cordon secrets set NAME | ls | rm NAME | rotate-master`: manage the
 * encrypted secret store in `$CORDON_HOME`. A value is read from piped stdin or `--from-file`, never
 * from the command line (argv shows in `ps` and shell history), and one
 * trailing newline is dropped. Values are never printed.
 *
 * These commands edit the store file directly, under its lock, whether or not
 * the control plane runs: the control plane reads the store afresh whenever it
 * resolves secrets, so a change applies to sandboxes created after it, and
 * running sandboxes keep the values they started with.
 *
 * `rotate-master` re-encrypts the store under a new master key file (see
 * secrets/rotate.ts). A running control plane needs no restart: it reads the
 * key file afresh with the store, and values it holds do not change.
 */
import type { Command } from 'commander';
import { readFileSync, statSync } from 'node:fs';
import { loadConfig, type CordonConfig } from '../../config/index.js';
import { InvalidInputError, NotFoundError } from '../../errors/index.js';
import { MAX_SECRET_BYTES, openSecretStore, rotateMasterKey, trimTrailingNewline } from '../../secrets/index.js';
import { cliHome, printJson } from '../context.js';

/** stdin or file content larger than this is refused (a value plus its newline). */
const MAX_INPUT_BYTES = MAX_SECRET_BYTES + 2;

async function readStdin(): Promise<Buffer> {
  if (process.stdin.isTTY) {
    throw new InvalidInputError('refusing to read a secret from the terminal, where it would be echoed', {
      fix: "pipe it in: `printf '%s' \"$TOKEN\" | cordon secrets set NAME`, or use --from-file FILE (bash: `read -rs TOKEN` first to type it unseen)",
    });
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_INPUT_BYTES) throw tooLarge('stdin');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function readValueFile(path: string): Buffer {
  let data: Buffer;
  try {
    if (statSync(path).size > MAX_INPUT_BYTES) throw tooLarge(path);
    data = readFileSync(path);
  } catch (err) {
    if (err instanceof InvalidInputError) throw err;
    throw new InvalidInputError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { fix: 'give a readable file that holds only the value' });
  }
  if (data.length > MAX_INPUT_BYTES) throw tooLarge(path);
  return data;
}

function tooLarge(what: string): InvalidInputError {
  return new InvalidInputError(`${what} holds more than ${MAX_SECRET_BYTES} bytes`, { fix: 'give only the credential itself' });
}

/** The config's source for `name`, when a config loads (a broken config must not block the store). */
function declaredSource(cmd: Command, name: string): { config: CordonConfig | undefined; from: string | undefined } {
  let root = cmd;
  while (root.parent) root = root.parent;
  try {
    const config = loadConfig(root.opts<{ config?: string }>().config);
    return { config, from: Object.hasOwn(config.secrets, name) ? config.secrets[name]!.from : undefined };
  } catch {
    return { config: undefined, from: undefined };
  }
}

export function registerSecrets(program: Command): void {
  const secrets = program.command('secrets').description('manage the encrypted secret store (values are never shown)');

  secrets
    .command('set')
    .description('store a secret read from piped stdin (or --from-file); replaces an existing one')
    .argument('<name>', 'secret name, as in {{secret.NAME}}')
    .option('--from-file <file>', 'read the value from this file instead of stdin')
    .option('--json', 'print JSON {name, created, keyCreated}')
    .action(async function secretsSet(name: string, opts: { fromFile?: string; json?: boolean }, cmd: Command) {
      const home = cliHome(cmd);
      const raw = opts.fromFile !== undefined ? readValueFile(opts.fromFile) : await readStdin();
      if (raw.length === 0) {
        throw new InvalidInputError(opts.fromFile !== undefined ? `${opts.fromFile} is empty` : 'no value on stdin', {
          fix: `pipe the value in: printf '%s' "$TOKEN" | cordon secrets set ${name}`,
        });
      }
      const result = await openSecretStore({ home }).set(name, trimTrailingNewline(raw));
      if (opts.json) {
        printJson({ name, created: result.created, ...(result.createdKeyPath ? { keyCreated: result.createdKeyPath } : {}) });
      } else {
        process.stdout.write(`${result.created ? 'stored' : 'replaced'} secret ${name}\n`);
      }
      if (result.createdKeyPath) {
        process.stderr.write(`created the master key ${result.createdKeyPath}: back it up; without it the secret store cannot be read\n`);
      }
      const { config, from } = declaredSource(cmd, name);
      if (config && from !== 'store') {
        process.stderr.write(from
          ? `note: cordon.yaml takes ${name} from ${from}, not from the store; use secrets: { ${name}: { from: store } } to use this value\n`
          : `note: cordon.yaml does not declare ${name}; add secrets: { ${name}: { from: store } } to use it\n`);
      }
    });

  secrets
    .command('ls')
    .description('list stored secrets: names and times, never values')
    .option('--json', 'print JSON {store, secrets: [{name, createdAt, updatedAt}]}')
    .action(function secretsLs(opts: { json?: boolean }, cmd: Command) {
      const store = openSecretStore({ home: cliHome(cmd) });
      const list = store.list();
      if (opts.json) return printJson({ store: store.path, secrets: list });
      if (list.length === 0) {
        process.stdout.write(`no secrets in ${store.path}\n`);
        return;
      }
      const width = Math.max(4, ...list.map((s) => s.name.length));
      process.stdout.write(`${'NAME'.padEnd(width)}  CREATED                   UPDATED\n`);
      for (const s of list) process.stdout.write(`${s.name.padEnd(width)}  ${s.createdAt.padEnd(24)}  ${s.updatedAt}\n`);
    });

  secrets
    .command('rm')
    .description('remove a stored secret')
    .argument('<name>', 'secret name')
    .option('--json', 'print JSON {name, removed}')
    .action(async function secretsRm(name: string, opts: { json?: boolean }, cmd: Command) {
      const removed = await openSecretStore({ home: cliHome(cmd) }).remove(name);
      if (!removed) {
        throw new NotFoundError(`the secret store has no secret ${name}`, { fix: 'list the stored secrets with `cordon secrets ls`' });
      }
      if (opts.json) printJson({ name, removed: true });
      else process.stdout.write(`removed secret ${name}\n`);
    });

  secrets
    .command('rotate-master')
    .description('re-encrypt the store under a new random master key (keys/master.key); refused when CORDON_MASTER_KEY is set')
    .option('--json', 'print JSON {store, keyPath, keyId, previousKeyId, secrets, interrupted, restartNeeded}')
    .action(async function secretsRotateMaster(opts: { json?: boolean }, cmd: Command) {
      const r = await rotateMasterKey({ home: cliHome(cmd) });
      if (opts.json) {
        printJson({ ...r, restartNeeded: false });
      } else {
        if (r.interrupted === 'completed') process.stdout.write(`finished an interrupted rotation first\n`);
        process.stdout.write(`re-encrypted ${r.secrets} secret${r.secrets === 1 ? '' : 's'} in ${r.store} under a new master key in ${r.keyPath} (key id ${r.keyId})\n`);
        process.stdout.write('a running `cordon up` on this home needs no restart: it reads the key file with the store at each lookup (one started with CORDON_MASTER_KEY set must be restarted without it)\n');
      }
      process.stderr.write(`back up ${r.keyPath} now; the old key is deleted, and older backups of ${r.store} still need it\n`);
    });
}
