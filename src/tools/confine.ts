/**
 * How a local MCP server runs: on the host (never in a guest), confined by
 * bubblewrap. The server gets read-only system directories (`/usr` and the
 * `/bin`, `/lib*` links, a few files of `/etc`), the host paths its config
 * lists (read-only), a private `/proc`, a minimal `/dev` and a private,
 * world-writable `/tmp`; every namespace is new (`--unshare-all`), so it has
 * no network unless its config says `network: true` (then the host network,
 * and `/etc/resolv.conf`); all capabilities are dropped; it dies with the
 * daemon (`--die-with-parent`) and cannot reach the daemon's terminal
 * (`--new-session`). When the daemon runs as root, `setpriv` first drops to
 * `nobody` (65534), so the server owns no host file.
 *
 * Environment: exactly the configured variables (plus a default `PATH`, and
 * the `PWD` that bubblewrap sets for `--chdir`).
 * They reach bubblewrap through its own environment, never on a command line
 * (which any host user can read in /proc), and every variable the stdio
 * transport adds on its own is removed with `--unsetenv`: the same result as
 * `--clearenv` followed by the configured values.
 */
import { lstatSync, readlinkSync } from 'node:fs';
import { DEFAULT_INHERITED_ENV_VARS } from '@modelcontextprotocol/sdk/client/stdio.js';

/** The uid and gid a root daemon drops to before starting bubblewrap. */
export const UNPRIVILEGED_ID = 65534;
/** `PATH` inside the confinement when the config sets none. */
export const CONFINED_PATH = '/usr/local/bin:/usr/bin:/bin';
/** System directories at the root: bound read-only, or recreated as the same symlink (merged-/usr systems). */
const ROOT_DIRS = ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];
/** Files of /etc that programs need to start (loader cache, TLS roots, names of users, time zone). */
const ETC_FILES = [
  '/etc/ld.so.cache', '/etc/ld.so.conf', '/etc/ld.so.conf.d', '/etc/alternatives', '/etc/ssl', '/etc/ca-certificates', '/etc/pki',
  '/etc/localtime', '/etc/nsswitch.conf', '/etc/passwd', '/etc/group', '/etc/hosts',
];
/** Added when the server has the network. */
const ETC_NETWORK_FILES = ['/etc/resolv.conf', '/etc/host.conf', '/etc/gai.conf'];

export interface ConfineInput {
  /** Program and arguments. */
  command: readonly string[];
  /** The server's whole environment, secrets already rendered. */
  env: Readonly<Record<string, string>>;
  /** @default false */
  network?: boolean;
  /** Host paths bound read-only at the same place. @default [] */
  paths?: readonly string[];
  /** Working directory inside. @default '/tmp' */
  cwd?: string;
}

export interface ConfineHost {
  /** @default '/usr/bin/bwrap' */
  bwrap?: string;
  /** @default '/usr/bin/setpriv' */
  setpriv?: string;
  /** Whether the daemon runs as root. @default process.getuid() === 0 */
  root?: boolean;
  /** What a root-level path is (`dir`, a symlink and its target, or absent). @default lstat */
  inspect?: (path: string) => { kind: 'dir' } | { kind: 'link'; target: string } | { kind: 'none' };
}

/** What to spawn: program, arguments, and the environment of the spawned process. */
export interface ConfinedCommand {
  command: string;
  args: string[];
  env: Record<string, string>;
}

function inspectPath(path: string): ReturnType<NonNullable<ConfineHost['inspect']>> {
  try {
    const st = lstatSync(path);
    if (st.isSymbolicLink()) return { kind: 'link', target: readlinkSync(path) };
    return st.isDirectory() ? { kind: 'dir' } : { kind: 'none' };
  } catch {
    return { kind: 'none' };
  }
}

/**
 * The bubblewrap command line for one local server.
 * @example
 * const c = confinedCommand({ command: ['/usr/bin/node', '/opt/mcp/server.js'], env: { TOKEN: 't' }, paths: ['/opt/mcp'] });
 * new StdioClientTransport({ command: c.command, args: c.args, env: c.env });
 */
export function confinedCommand(o: ConfineInput, host: ConfineHost = {}): ConfinedCommand {
  if (o.command.length === 0) throw new Error('a local MCP server needs a command');
  const inspect = host.inspect ?? inspectPath;
  const root = host.root ?? process.getuid?.() === 0;
  const b: string[] = ['--unshare-all'];
  if (o.network) b.push('--share-net');
  b.push('--die-with-parent', '--new-session', '--cap-drop', 'ALL', '--hostname', 'cordon-tool');
  b.push('--ro-bind', '/usr', '/usr');
  for (const dir of ROOT_DIRS) {
    const what = inspect(dir);
    if (what.kind === 'link') b.push('--symlink', what.target, dir);
    else if (what.kind === 'dir') b.push('--ro-bind', dir, dir);
  }
  for (const f of [...ETC_FILES, ...(o.network ? ETC_NETWORK_FILES : [])]) b.push('--ro-bind-try', f, f);
  b.push('--proc', '/proc', '--dev', '/dev', '--perms', '1777', '--tmpfs', '/tmp');
  for (const p of o.paths ?? []) b.push('--ro-bind', p, p);
  b.push('--chdir', o.cwd ?? '/tmp');
  for (const name of DEFAULT_INHERITED_ENV_VARS) if (!Object.hasOwn(o.env, name)) b.push('--unsetenv', name);
  if (!Object.hasOwn(o.env, 'PATH')) b.push('--setenv', 'PATH', CONFINED_PATH);
  b.push('--', ...o.command);
  const bwrap = host.bwrap ?? '/usr/bin/bwrap';
  const env = { ...o.env };
  if (!root) return { command: bwrap, args: b, env };
  const setpriv = host.setpriv ?? '/usr/bin/setpriv';
  const drop = [`--reuid=${UNPRIVILEGED_ID}`, `--regid=${UNPRIVILEGED_ID}`, '--clear-groups', '--inh-caps=-all'];
  return { command: setpriv, args: [...drop, bwrap, ...b], env };
}
