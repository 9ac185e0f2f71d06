/**
 * Talking to the host's apt: which Debian mirror it uses, what version of a
 * package it would install, and fetching a `.deb` without installing it.
 *
 * The mirror is read from the system's apt sources at run time (deb822
 * `*.sources` files and one-line `sources.list` files), never written into
 * the project.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EnvironmentError } from '../../errors/index.js';
import { runTool } from './exec.js';

export interface AptSource {
  uri: string;
  suites: string[];
  components: string[];
}

/** Parse deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Components:`, `Enabled:`). Only `deb` sources. */
export function parseDeb822Sources(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const line of stanza.split('\n')) {
      if (line.startsWith('#') || line.trim() === '') continue;
      if (/^\s/.test(line) && last) {
        fields.set(last, `${fields.get(last)} ${line.trim()}`);
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m && m[1] && m[2] !== undefined) {
        last = m[1].toLowerCase();
        fields.set(last, m[2].trim());
      }
    }
    const words = (k: string) => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
    if (!words('types').includes('deb')) continue;
    if ((fields.get('enabled') ?? 'yes').toLowerCase() === 'no') continue;
    for (const uri of words('uris')) out.push({ uri, suites: words('suites'), components: words('components') });
  }
  return out;
}

/** Parse one-line `deb [options] URI suite component…` entries. */
export function parseOneLineSources(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line.startsWith('deb ')) continue;
    const rest = line.slice(4).replace(/\[[^\]]*\]/, ' ').trim().split(/\s+/);
    const [uri, suite, ...components] = rest;
    if (uri && suite) out.push({ uri, suites: [suite], components });
  }
  return out;
}

/**
 * The mirror for `suite`: the first source that serves that suite with the
 * `main` component (e.g. `http://<mirror>/debian`). Throws if there is none.
 * @param aptDir the apt configuration directory @default /etc/apt
 */
export function findDebianMirror(suite: string, aptDir = '/etc/apt'): string {
  const sources: AptSource[] = [];
  const list = join(aptDir, 'sources.list');
  if (existsSync(list)) sources.push(...parseOneLineSources(readFileSync(list, 'utf8')));
  const dir = join(aptDir, 'sources.list.d');
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) {
      const text = readFileSync(join(dir, name), 'utf8');
      if (name.endsWith('.sources')) sources.push(...parseDeb822Sources(text));
      else if (name.endsWith('.list')) sources.push(...parseOneLineSources(text));
    }
  }
  const hit = sources.find((s) => s.suites.includes(suite) && s.components.includes('main'));
  if (!hit) {
    throw new EnvironmentError('env-no-mirror', `no apt source serves Debian "${suite}" main`, {
      fix: `add a Debian mirror for ${suite} to /etc/apt/sources.list.d/ and run apt-get update`,
      details: { suite, found: sources.map((s) => `${s.uri} ${s.suites.join(',')}`) },
    });
  }
  return hit.uri.replace(/\/+$/, '');
}

/** The stanzas of `apt-cache show` output, one field map each. */
export function parseAptShow(text: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields: Record<string, string> = {};
    for (const line of stanza.split('\n')) {
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m && m[1] && m[2] !== undefined) fields[m[1]] = m[2];
    }
    if (fields['Package']) out.push(fields);
  }
  return out;
}

/**
 * The concrete package a metapackage pins in `Depends:`, matching `pattern`
 * (`linux-image-6.1.0-56-amd64 (= 6.1.192-2)` → name and version).
 */
export function parsePinnedDepends(depends: string, pattern: RegExp): PackageRef | undefined {
  for (const alt of depends.split(/[,|]/)) {
    const m = /^\s*(\S+)\s*\(\s*=\s*([^)\s]+)\s*\)/.exec(alt);
    if (m && m[1] && m[2] && pattern.test(m[1])) return { name: m[1], version: m[2] };
  }
  return undefined;
}

export interface AptTools {
  'apt-get': string;
  'apt-cache': string;
  'dpkg-deb': string;
}

export interface PackageRef {
  name: string;
  version: string;
}

/**
 * Candidate versions of the guest's Debian packages, from the local apt lists
 * (no network): the kernel that `linux-image-amd64` pins, and busybox-static.
 */
export async function resolveGuestPackages(tools: AptTools): Promise<{ kernel: PackageRef; busybox: PackageRef }> {
  const names = ['linux-image-amd64', 'busybox-static'];
  let stanzas: Record<string, string>[];
  try {
    stanzas = parseAptShow((await runTool(tools['apt-cache'], ['show', '--no-all-versions', ...names])).stdout);
  } catch (err) {
    throw noPackage(names.join(' or '), err);
  }
  const byName = new Map(stanzas.map((f) => [f['Package'], f]));
  const meta = byName.get('linux-image-amd64');
  const kernel = meta && parsePinnedDepends(meta['Depends'] ?? '', /^linux-image-\d[\w.+-]*$/);
  if (!kernel) throw noPackage('linux-image-amd64 (its pinned linux-image-<release> dependency)', undefined);
  const bb = byName.get('busybox-static');
  if (!bb?.['Version']) throw noPackage('busybox-static', undefined);
  return { kernel, busybox: { name: 'busybox-static', version: bb['Version'] } };
}

/** Download `pkg` (exact version) into `dir` and unpack it into `dir/<name>/`. Returns the unpack dir. */
export async function fetchAndUnpack(tools: AptTools, pkg: PackageRef, dir: string): Promise<string> {
  await runTool(tools['apt-get'], ['download', '-q', `${pkg.name}=${pkg.version}`], { cwd: dir });
  const deb = readdirSync(dir).find((f) => f.startsWith(`${pkg.name}_`) && f.endsWith('.deb'));
  if (!deb) throw new EnvironmentError('env-tool-failed', `apt-get download ${pkg.name} produced no .deb`, { fix: 'run apt-get update and try again' });
  const out = join(dir, pkg.name);
  await runTool(tools['dpkg-deb'], ['-x', join(dir, deb), out]);
  return out;
}

function noPackage(name: string, cause: unknown): EnvironmentError {
  return new EnvironmentError('env-missing-package', `apt knows no installable version of ${name}`, {
    fix: 'run `apt-get update` (and check that a Debian bookworm mirror is configured)',
    cause,
  });
}
