/**
 * Test-only: an agent with bound secrets and its sandbox secrets, shared by
 * the substitution and scanner tests.
 */
import { parseConfig, type AgentConfig } from '../config/index.js';
import { createSandboxSecrets, type SandboxSecrets } from './placeholders.js';
import { SecretValue } from './value.js';

/** Bound to api.github.com (authorization) and uploads.github.com (x-token). */
export const GH_VALUE = 'ghp_R3alT0kenValue0123456789abcdefXYZ';
/** Bound to *.example.com (x-api-key); has a space, "/", "~", quotes and "+" to exercise every encoding. */
export const API_VALUE = 'api key/with~~~~~~"quote"+plus';
/** Not referred to by the agent: blocked in traffic all the same (a provider key). */
export const PROVIDER_VALUE = 'sk-provider-0123456789ABCDEF';

export const AGENT_YAML = `
version: 1
agents:
  reviewer:
    env:
      GITHUB_TOKEN: "{{secret.gh}}"
      BOTH: "{{secret.gh}}:{{secret.api}}"
      PLAIN: hello
    egress:
      - host: api.github.com
        secrets: { authorization: "Bearer {{secret.gh}}" }
      - host: uploads.github.com
        ports: [443]
        secrets: { x-token: "{{secret.gh}}", x-both: "{{secret.gh}}/{{secret.api}}" }
      - host: "*.example.com"
        secrets: { x-api-key: "{{secret.api}}" }
      - host: pypi.org
secrets:
  gh: { from: env, name: GH }
  api: { from: env, name: API }
`;

export function reviewerAgent(): AgentConfig {
  return parseConfig(AGENT_YAML).agents.reviewer!;
}

export function reviewerSecrets(): SandboxSecrets {
  return createSandboxSecrets({
    agentName: 'reviewer',
    agent: reviewerAgent(),
    values: new Map([['gh', new SecretValue('gh', Buffer.from(GH_VALUE))], ['api', new SecretValue('api', Buffer.from(API_VALUE))]]),
    alsoBlock: new Map([['openai_key', new SecretValue('openai_key', Buffer.from(PROVIDER_VALUE))]]),
  });
}
