/**
 * Classes of paths that hold credentials or secrets (SSH keys, cloud
 * credentials, the shadow password file, token files of package and
 * container registries, shell history). A first access to a class is judged
 * as the `sensitive` feature, besides the path itself: reading `~/.ssh` is
 * stronger evidence than reaching any other path never seen for the agent,
 * and an agent that legitimately reads one class (an ops agent and its
 * `~/.kube/config`) learns it like any other value.
 *
 * @example sensitiveClassOf('/root/.ssh/id_ed25519') // 'ssh'
 * @example sensitiveClassOf('/workspace/app/main.py') // undefined
 */

/** Path patterns per class, matched against the path with the home directory written `~/`. */
const CLASSES: readonly (readonly [string, RegExp])[] = [
  ['ssh', /^~\/\.ssh\/|^\/etc\/ssh\/ssh_host_.*key/],
  ['cloud', /^~\/\.(aws|azure)\/|^~\/\.config\/gcloud\/|^~\/\.oci\//],
  ['shadow', /^\/etc\/(g?shadow|sudoers)(-|$|\.d\/)/],
  ['netrc', /^~\/\.(netrc|git-credentials|pgpass|my\.cnf)$/],
  ['registry-token', /^~\/\.(npmrc|pypirc)$|^~\/\.docker\/config\.json$|^~\/\.config\/(gh|hub)\//],
  ['kube', /^~\/\.kube\/config$/],
  ['gpg', /^~\/\.gnupg\//],
  ['keyring', /^~\/\.(local\/share\/keyrings|password-store)\//],
  ['process-env', /^\/proc\/[^/]+\/environ$/],
  ['shell-history', /^~\/\.(bash|zsh|python|psql)_history$/],
  ['dotenv', /(^|\/)\.env(\.[A-Za-z0-9_-]+)?$/],
  ['private-key', /\.(pem|key|p12|pfx)$|(^|\/)id_(rsa|dsa|ecdsa|ed25519)$/],
];

/** A path with `/root/` and `/home/USER/` written as `~/`, `.` and empty segments dropped. */
export function homeRelative(path: string): string {
  const parts = path.split('/').filter((p) => p.length > 0 && p !== '.');
  const abs = path.startsWith('/');
  if (parts[0] === '~') return ['~', ...parts.slice(1)].join('/');
  if (abs && parts[0] === 'root') return ['~', ...parts.slice(1)].join('/');
  if (abs && parts[0] === 'home' && parts.length > 1) return ['~', ...parts.slice(2)].join('/');
  return (abs ? '/' : '') + parts.join('/');
}

/**
 * The credential class a path belongs to, or `undefined`.
 * @param path as the event gave it (absolute, `~/…` or relative)
 */
export function sensitiveClassOf(path: string): string | undefined {
  if (path.split('/').includes('..')) return sensitiveClassOf(collapse(path));
  const p = homeRelative(path);
  for (const [name, re] of CLASSES) if (re.test(p)) return name;
  return undefined;
}

/** Resolve `..` segments lexically, so `/workspace/../root/.ssh/id_rsa` is seen for what it is. */
function collapse(path: string): string {
  const out: string[] = [];
  for (const p of path.split('/')) {
    if (p === '..') out.pop();
    else if (p.length > 0 && p !== '.') out.push(p);
  }
  return (path.startsWith('/') ? '/' : '') + out.join('/');
}
