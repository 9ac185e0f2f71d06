/**
 * Loading `cordon.yaml`: find the file, read it (at most 1 MiB of UTF-8),
 * check the version, validate it against the schema, run the cross-field
 * checks, and report every problem at once as a {@link ConfigError}. With no
 * file, the built-in configuration has one agent, `default`.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, NotFoundError, type ConfigIssue } from '../errors/index.js';
import { crossCheck } from './checks.js';
import { formatZodIssues, makeIssue, show } from './errors/format.js';
import { closest } from './errors/suggest.js';
import { ConfigSchema, type AgentConfig, type CordonConfig } from './schema.js';
import { readSource, type ConfigSource } from './source.js';

/** Largest config file accepted. */
export const MAX_CONFIG_BYTES = 1024 * 1024;
/** The file looked for in the working directory. */
export const CONFIG_FILE_NAME = 'cordon.yaml';

export interface LoadConfigOptions {
  /** Environment to read `CORDON_CONFIG` from. @default process.env */
  env?: NodeJS.ProcessEnv;
  /** Directory searched for `cordon.yaml`. @default process.cwd() */
  cwd?: string;
}

/**
 * The configuration used when there is no file: the built-in `default` agent
 * (microvm, no egress, no secrets, no tools) and default settings.
 */
export function defaultConfig(): CordonConfig {
  return ConfigSchema.parse({ version: 1 });
}

/**
 * Which config file {@link loadConfig} would read: an explicit path, else
 * `$CORDON_CONFIG`, else `./cordon.yaml` if it exists; `undefined` means the
 * built-in defaults. `explicit` files must exist.
 */
export function findConfigFile(path?: string, opts: LoadConfigOptions = {}): { path: string; explicit: boolean } | undefined {
  if (path !== undefined && path !== '') return { path, explicit: true };
  const fromEnv = (opts.env ?? process.env).CORDON_CONFIG;
  if (fromEnv) return { path: fromEnv, explicit: true };
  const candidate = join(opts.cwd ?? process.cwd(), CONFIG_FILE_NAME);
  try {
    statSync(candidate);
    return { path: candidate, explicit: false };
  } catch {
    return undefined;
  }
}

/**
 * Load and validate the configuration.
 *
 * @param path the file to read; when left out, `$CORDON_CONFIG`, then
 *   `./cordon.yaml`, then the built-in defaults.
 * @throws ConfigError naming the file and listing every problem found.
 * @example
 * const config = loadConfig();              // ./cordon.yaml or defaults
 * const config = loadConfig('prod.yaml');
 */
export function loadConfig(path?: string, opts: LoadConfigOptions = {}): CordonConfig {
  const found = findConfigFile(path, opts);
  if (!found) return defaultConfig();
  return parseConfig(readConfigText(found.path), found.path);
}

function readConfigText(path: string): string {
  let size: number;
  try {
    const st = statSync(path);
    if (st.isDirectory()) {
      throw new ConfigError(`config file ${path} is a directory`, [], { fix: `point to the file inside it, e.g. ${join(path, CONFIG_FILE_NAME)}` });
    }
    size = st.size;
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new ConfigError(`config file ${path} not found`, [], {
        cause: err,
        fix: 'check the path (from --config or $CORDON_CONFIG), or leave both unset to use ./cordon.yaml or the built-in default agent',
        details: { file: path },
      });
    }
    throw new ConfigError(`config file ${path} cannot be read (${code ?? 'error'})`, [], { cause: err, fix: 'check that the file exists and is readable by this user', details: { file: path } });
  }
  if (size > MAX_CONFIG_BYTES) throw tooLarge(path, size);
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`config file ${path} cannot be read (${code ?? 'error'})`, [], { cause: err, fix: 'check that the file is readable by this user', details: { file: path } });
  }
  if (bytes.length > MAX_CONFIG_BYTES) throw tooLarge(path, bytes.length);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not UTF-8 text`, [], { cause: err, fix: 'save the file as UTF-8', details: { file: path } });
  }
}

function tooLarge(fileName: string, bytes: number): ConfigError {
  return new ConfigError(`config file ${fileName} is too large (${bytes} bytes; the limit is ${MAX_CONFIG_BYTES})`, [], {
    fix: 'a cordon config is a few kilobytes; check that this is the right file',
    details: { file: fileName },
  });
}

/**
 * Validate config text. `fileName` is only used in messages.
 * @throws ConfigError listing every problem, each with path, problem, fix and line.
 */
export function parseConfig(text: string, fileName = CONFIG_FILE_NAME): CordonConfig {
  if (Buffer.byteLength(text, 'utf8') > MAX_CONFIG_BYTES) throw tooLarge(fileName, Buffer.byteLength(text, 'utf8'));
  const source = readSource(text.replace(/^\uFEFF/, ''), fileName);
  const issues: ConfigIssue[] = [];
  const data = checkVersion(source, issues);

  const result = ConfigSchema.safeParse(data);
  if (!result.success) {
    issues.push(...formatZodIssues(result.error.issues, { schema: ConfigSchema, data, lineOf: source.lineOf }));
  }
  for (const raw of crossCheck(source.data)) issues.push(makeIssue(source, raw.path, raw.problem, raw.fix));

  if (issues.length > 0 || !result.success) throw invalid(fileName, issues);
  return result.data;
}

/**
 * Check `version`. An unknown version stops here (the rest of the file is in a
 * format this loader does not know); a missing one is reported and the rest is
 * checked as version 1.
 */
function checkVersion(source: ConfigSource, issues: ConfigIssue[]): Record<string, unknown> {
  const version = source.data.version;
  if (version === 1) return source.data;
  if (version === undefined) {
    issues.push({ path: 'version', problem: 'the file has no version', fix: 'add "version: 1" as the first line', line: 1 });
    return { ...source.data, version: 1 };
  }
  const problem = String(version) === '1'
    ? `version is ${show(version)}, not the number 1`
    : `version ${JSON.stringify(version)} is not supported; only version 1 is supported`;
  const fix = String(version) === '1' ? 'write "version: 1" without quotes' : 'set "version: 1" (see cordon.example.yaml for the format)';
  throw invalid(source.fileName, [makeIssue(source, ['version'], problem, fix)]);
}

function invalid(fileName: string, issues: ConfigIssue[]): ConfigError {
  const unique = dedupe(issues).sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  const count = `${unique.length} problem${unique.length === 1 ? '' : 's'}`;
  return new ConfigError(`${fileName} is invalid (${count})`, unique, {
    fix: unique.length === 1 ? unique[0]!.fix : 'fix each problem listed; cordon.example.yaml documents every field',
    details: { file: fileName },
  });
}

function dedupe(issues: ConfigIssue[]): ConfigIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const key = `${i.path}\u0000${i.problem}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * The agent called `name`.
 * @throws NotFoundError listing the agents that exist.
 */
export function resolveAgent(config: CordonConfig, name: string): AgentConfig {
  const agent = Object.hasOwn(config.agents, name) ? config.agents[name] : undefined;
  if (agent) return agent;
  const known = Object.keys(config.agents).sort();
  const suggestion = closest(name, known);
  throw new NotFoundError(`no agent named "${name}"${suggestion ? ` (did you mean "${suggestion}"?)` : ''}; known agents: ${known.join(', ') || 'none'}`, {
    fix: `use one of ${known.join(', ')}, or define "${name}" under agents: in cordon.yaml`,
    details: { agent: name, known },
  });
}
