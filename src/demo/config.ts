/**
 * The demo's own configuration, built in code and validated by the same
 * schema as `cordon.yaml`: one agent `demo` (the default kind: microVM), the
 * demo API reachable with a bound secret and a payment rule that needs
 * approval, model access through one provider (the `scripted` one, or the
 * user's, whose key is resolved from the user's own home and handed to the
 * demo control plane as an environment secret).
 */
import { ConfigSchema, type CordonConfig, type ProviderConfig } from '../config/index.js';
import { InvalidInputError } from '../errors/index.js';
import { DEMO_API_HOST, DEMO_SECRET, DEMO_TOKEN_ENV } from './api.js';

export const DEMO_AGENT = 'demo';
/** The name of the built-in scripted provider in the demo config. */
export const SCRIPTED_PROVIDER = 'scripted';
/** Environment variables of the demo control plane (never of this process) that hold the secrets. */
export const TOKEN_SOURCE_ENV = 'CORDON_DEMO_API_TOKEN';
export const PROVIDER_KEY_ENV = 'CORDON_DEMO_PROVIDER_KEY';
const PROVIDER_KEY_SECRET = 'demo_provider_key';

/** Default model per provider type when `--model` is not given. */
const DEFAULT_MODELS: Partial<Record<ProviderConfig['type'], string>> = {
  openai: 'gpt-4.1-mini',
  anthropic: 'claude-sonnet-4-5',
  scripted: 'cordon-scripted',
};

/** The model the demo's agent talks to. */
export interface DemoModel {
  /** Provider name in the demo config. */
  provider: string;
  type: ProviderConfig['type'];
  /** What the agent asks for: `provider/model`. */
  model: string;
  dialect: 'openai' | 'anthropic';
  /** The user's provider as configured (for a user provider). */
  source?: ProviderConfig;
}

/**
 * Pick the model: the scripted provider, or `providerName` from the user's config.
 * @throws InvalidInputError for an unknown provider, or one with no default model and no `--model`
 */
export function pickModel(userConfig: CordonConfig, providerName: string | undefined, model: string | undefined): DemoModel {
  if (providerName === undefined || providerName === SCRIPTED_PROVIDER) {
    return { provider: SCRIPTED_PROVIDER, type: 'scripted', model: `${SCRIPTED_PROVIDER}/${model ?? DEFAULT_MODELS.scripted}`, dialect: 'openai' };
  }
  const source = Object.hasOwn(userConfig.providers, providerName) ? userConfig.providers[providerName] : undefined;
  if (!source) {
    const names = Object.keys(userConfig.providers);
    throw new InvalidInputError(`there is no provider ${JSON.stringify(providerName)} in cordon.yaml`, {
      fix: names.length > 0 ? `use one of: ${names.join(', ')} (or leave --provider out for the scripted model)` : 'add it under providers: in cordon.yaml, or leave --provider out for the scripted model',
    });
  }
  const name = model ?? DEFAULT_MODELS[source.type];
  if (!name) {
    throw new InvalidInputError(`provider ${providerName} (${source.type}) has no default model`, { fix: `name one: cordon demo --provider ${providerName} --model llama3.1` });
  }
  return { provider: providerName, type: source.type, model: `${providerName}/${name}`, dialect: source.type === 'anthropic' ? 'anthropic' : 'openai', source };
}

/**
 * The demo config for a demo API on `apiPort`.
 * @throws the schema's error if the result does not validate (a bug)
 */
export function demoConfig(apiPort: number, m: DemoModel): CordonConfig {
  const provider = m.type === 'scripted'
    ? { type: 'scripted', baseUrl: 'http://scripted.invalid/v1' }
    : { type: m.type, baseUrl: m.source!.baseUrl, ...(m.source!.apiKey ? { apiKey: `{{secret.${PROVIDER_KEY_SECRET}}}` } : {}) };
  return ConfigSchema.parse({
    version: 1,
    agents: {
      [DEMO_AGENT]: {
        isolation: 'microvm',
        resources: { vcpus: 1, memoryMiB: 512, timeout: '10m' },
        env: { [DEMO_TOKEN_ENV]: `{{secret.${DEMO_SECRET}}}` },
        egress: [
          {
            host: DEMO_API_HOST,
            ports: [apiPort],
            secrets: { authorization: `Bearer {{secret.${DEMO_SECRET}}}` },
            rules: [
              { method: 'POST', path: '/v1/payments', action: 'approve' },
              { method: 'GET', path: '/v1/**', action: 'allow' },
            ],
          },
          // The demo API listens on loopback: the proxy refuses loopback addresses unless a cidr rule allows them.
          { cidr: '127.0.0.1/32', ports: [apiPort] },
        ],
        llm: { models: [`${m.provider}/*`] },
      },
    },
    secrets: {
      [DEMO_SECRET]: { from: 'env', name: TOKEN_SOURCE_ENV },
      ...(m.type !== 'scripted' && m.source?.apiKey ? { [PROVIDER_KEY_SECRET]: { from: 'env', name: PROVIDER_KEY_ENV } } : {}),
    },
    providers: { [m.provider]: provider },
    approvals: { holdTimeout: '120s' },
  });
}
