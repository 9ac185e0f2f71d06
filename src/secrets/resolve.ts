/**
 * Resolving secrets before a sandbox starts: every secret an agent refers to
 * (its `env` values and its egress header templates) is read from its source
 * (`store`, `env`, `command`) and checked. Any failure fails the whole call
 * with one error that lists every secret that could not be resolved, so a
 * sandbox never starts with a secret silently blank.
 */
import { resolveAgent, scanTemplate, type AgentConfig, type CordonConfig, type SecretSource } from '../config/index.js';
import { CordonError } from '../errors/index.js';
import { runSecretCommand } from './command.js';
import { SecretError, type SecretProblem } from './errors.js';
import { openSecretStore, type SecretStore } from './store.js';
import { checkSecretBytes, SecretValue, trimTrailingNewline } from './value.js';

/** Resolved values by secret name. */
export type ResolvedSecrets = ReadonlyMap<string, SecretValue>;

export interface ResolveSecretsOptions {
  /** `$CORDON_HOME`, where the store and its key live. */
  home: string;
  /** The daemon's environment (`env` sources, `CORDON_MASTER_KEY`, command environment). @default process.env */
  env?: NodeJS.ProcessEnv;
  /** The store to read `store` sources from. @default openSecretStore({ home, env }) */
  store?: SecretStore;
  /** Names what the secrets are for in the error, e.g. `agent "reviewer"`. */
  purpose?: string;
}

/**
 * Secret names an agent refers to: in its `env` values and its egress header
 * templates, in order of appearance, each once.
 */
export function agentSecretNames(agent: Pick<AgentConfig, 'env' | 'egress'>): string[] {
  const names: string[] = [];
  const add = (text: string): void => {
    for (const n of scanTemplate(text).secrets) if (!names.includes(n)) names.push(n);
  };
  for (const value of Object.values(agent.env ?? {})) add(value);
  for (const rule of agent.egress ?? []) for (const template of Object.values(rule.secrets ?? {})) add(template);
  return names;
}

/**
 * Resolve `names` from their configured sources.
 * @throws SecretError `secret-unresolved` listing every secret that is undeclared, missing or failed
 * @example
 * const values = await resolveSecrets(config, agentSecretNames(agent), { home });
 */
export async function resolveSecrets(config: CordonConfig, names: readonly string[], opts: ResolveSecretsOptions): Promise<ResolvedSecrets> {
  const env = opts.env ?? process.env;
  let store = opts.store;
  let storeFailure: SecretProblem | undefined;
  const storeOf = (): SecretStore => (store ??= openSecretStore({ home: opts.home, env }));

  const problems: SecretProblem[] = [];
  const values = new Map<string, SecretValue>();
  const unique = [...new Set(names)];
  await Promise.all(unique.map(async (name) => {
    const source: SecretSource | undefined = Object.hasOwn(config.secrets, name) ? config.secrets[name] : undefined;
    if (!source) {
      problems.push({ secret: name, problem: 'it is referred to but not declared under secrets:', fix: `declare it, e.g. secrets: { ${name}: { from: store } }` });
      return;
    }
    try {
      const bytes = await readSource(name, source, env, storeOf);
      const bad = checkSecretBytes(bytes);
      if (bad) throw new SecretError('secret-invalid', `${describeSource(source)} gives an unusable value: ${bad.problem}`, { fix: bad.fix });
      values.set(name, new SecretValue(name, bytes));
    } catch (err) {
      if (err instanceof StoreUnreadable) {
        storeFailure ??= { secret: '(store)', problem: err.storeError.message, fix: err.storeError.fix ?? 'restore the secret store' };
        problems.push({ secret: name, problem: 'the secret store cannot be opened', fix: 'see (store) above' });
      } else if (err instanceof CordonError) {
        problems.push({ secret: name, problem: err.message, fix: err.fix ?? 'check its source' });
      } else {
        problems.push({ secret: name, problem: `${describeSource(source)} failed unexpectedly`, fix: 'check its source' });
      }
    }
  }));
  if (storeFailure) problems.unshift(storeFailure);
  if (problems.length > 0) {
    problems.sort((a, b) => (a.secret === '(store)' ? -1 : b.secret === '(store)' ? 1 : unique.indexOf(a.secret) - unique.indexOf(b.secret)));
    const failed = problems.filter((p) => p.secret !== '(store)').length;
    throw new SecretError('secret-unresolved', `cannot resolve ${failed} of ${unique.length} secret(s)${opts.purpose ? ` for ${opts.purpose}` : ''}; nothing was started`, {
      fix: 'fix each secret listed',
      problems,
      details: { secrets: problems.map((p) => p.secret) },
    });
  }
  return values;
}

/** Resolve every secret the agent `agentName` refers to. */
export function resolveAgentSecrets(config: CordonConfig, agentName: string, opts: ResolveSecretsOptions): Promise<ResolvedSecrets> {
  const agent = resolveAgent(config, agentName);
  return resolveSecrets(config, agentSecretNames(agent), { purpose: `agent "${agentName}"`, ...opts });
}

/** The store itself cannot be read: reported once, not once per secret. */
class StoreUnreadable extends Error {
  readonly storeError: CordonError;
  constructor(storeError: CordonError) {
    super(storeError.message);
    this.storeError = storeError;
  }
}

async function readSource(name: string, source: SecretSource, env: NodeJS.ProcessEnv, storeOf: () => SecretStore): Promise<Buffer> {
  switch (source.from) {
    case 'store': {
      let value: SecretValue | undefined;
      try {
        value = storeOf().get(name);
      } catch (err) {
        if (err instanceof CordonError) throw new StoreUnreadable(err);
        throw err;
      }
      if (!value) throw new SecretError('secret-not-found', 'the secret store has no secret of this name', { fix: `store it: printf '%s' "$VALUE" | cordon secrets set ${name}` });
      return value.revealBytes();
    }
    case 'env': {
      const value = env[source.name];
      if (value === undefined) throw new SecretError('secret-not-found', `the environment variable ${source.name} is not set`, { fix: `set ${source.name} in the environment of \`cordon up\`` });
      return Buffer.from(value, 'utf8');
    }
    case 'command':
      return trimTrailingNewline(await runSecretCommand(source.command, { timeoutMs: source.timeoutMs, env }));
  }
}

function describeSource(source: SecretSource): string {
  switch (source.from) {
    case 'store': return 'the secret store';
    case 'env': return `the environment variable ${source.name}`;
    case 'command': return `\`${source.command[0]}\``;
  }
}
