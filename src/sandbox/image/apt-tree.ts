/**
 * Installing Debian packages into an image's root file system tree at build
 * time: apt runs inside the tree (bubblewrap puts the tree at `/` with its own
 * /proc, /dev and /tmp in a private mount namespace, so nothing stays mounted
 * when it ends, however it ends). The host's network is used to reach the
 * Debian mirror written into the tree by debootstrap; the host's resolver file
 * is bound over the guest's empty one for the run only. Package caches and
 * lists are removed afterwards: dead weight in every sandbox's disk.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, EnvironmentError } from '../../errors/index.js';
import { runTool } from './exec.js';

export interface AptInstallOptions {
  /** Absolute path of bwrap. */
  bwrap: string;
  tree: string;
  packages: readonly string[];
  /** Each line of apt's output, for progress. */
  onLine?: (line: string) => void;
  /** Where the config names these packages, for errors. @default 'image.packages' */
  where?: string;
}

/** Packages apt could not find, from its error lines. */
export function missingPackages(aptOutput: string): string[] {
  const names = new Set<string>();
  for (const m of aptOutput.matchAll(/^E: Unable to locate package (\S+)/gm)) names.add(m[1]!);
  for (const m of aptOutput.matchAll(/^E: Package '([^']+)' has no installation candidate/gm)) names.add(m[1]!);
  return [...names];
}

/**
 * `apt-get update && apt-get install --no-install-recommends PACKAGES` inside `tree`.
 * @throws ConfigError naming each package apt does not know, with the fix
 * @throws EnvironmentError `env-apt-failed` for any other failure (with apt's last lines)
 */
export async function aptInstallInTree(o: AptInstallOptions): Promise<void> {
  if (o.packages.length === 0) return;
  // No service may start at build time (postinst scripts ask policy-rc.d).
  const policy = join(o.tree, 'usr/sbin/policy-rc.d');
  writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  const lines: string[] = [];
  const script = 'set -e; apt-get -q update; apt-get -q install -y --no-install-recommends -- "$@"; apt-get clean';
  try {
    await runTool(o.bwrap, [
      '--bind', o.tree, '/', '--proc', '/proc', '--dev', '/dev', '--perms', '1777', '--tmpfs', '/tmp',
      '--ro-bind', '/etc/resolv.conf', '/etc/resolv.conf', '--die-with-parent',
      '--setenv', 'DEBIAN_FRONTEND', 'noninteractive', '--setenv', 'PATH', '/usr/sbin:/usr/bin:/sbin:/bin', '--setenv', 'LC_ALL', 'C',
      '--', '/bin/sh', '-c', script, 'apt-install', ...o.packages,
    ], {
      onLine: (line) => {
        if (lines.length < 20_000) lines.push(line);
        o.onLine?.(line);
      },
    });
  } catch (err) {
    const text = lines.join('\n');
    const missing = missingPackages(text);
    const where = o.where ?? 'image.packages';
    if (missing.length > 0) {
      throw new ConfigError(`Debian has no package named ${missing.map((m) => `"${m}"`).join(', ')} (${where})`, missing.map((m) => ({
        path: where, problem: `Debian bookworm has no package "${m}"`, fix: `correct or remove "${m}"; \`apt-cache search ${m}\` lists similar names`,
      })), { fix: `correct or remove ${missing.join(', ')} in ${where}; \`apt-cache search NAME\` on a Debian bookworm host lists the real names`, cause: err });
    }
    throw new EnvironmentError('env-apt-failed', `installing ${o.packages.join(' ')} into the image failed: ${lines.slice(-6).join(' | ')}`, {
      fix: 'check that this host reaches its Debian mirror (`apt-get update`), then run the build again', cause: err,
    });
  } finally {
    rmSync(policy, { force: true });
    for (const dir of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
      rmSync(join(o.tree, dir), { recursive: true, force: true });
      mkdirSync(join(o.tree, dir, 'partial'), { recursive: true });
    }
  }
}
