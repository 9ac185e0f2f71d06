/**
 * One red-team session: start the canaries and the hijackable model, stand
 * up the target of the chosen profile (the scratch deployment, or the weak
 * setup), run the attacks, and take everything down again, also when a step
 * fails. Setup failures (no image, no QEMU, a back end that is missing)
 * reject with the error that names the fix; they are never a scorecard.
 */
import { randomBytes } from 'node:crypto';
import type { CordonConfig } from '../config/index.js';
import type { EgressLimitsOverride } from '../egress/index.js';
import type { Isolation, SandboxBackend } from '../sandbox/index.js';
import { startCanaries } from './canary.js';
import { startProtectedDeployment, type ReferenceAgent } from './deployment.js';
import { REDTEAM_MODEL, startHijackableModel } from './model.js';
import { EnvironmentError } from '../errors/index.js';
import { runAttacks, type ProgressEvent } from './run.js';
import { protectedTarget, unprotectedTarget } from './targets.js';
import type { Attack, Profile, Scorecard, Target } from './types.js';

export interface SessionOptions {
  profile: Profile;
  attacks: Attack[];
  /** The operator's config (protected profile: identity, approvals, audit settings). */
  operatorConfig: CordonConfig;
  /** @default the first agent of the operator's config, else microvm with 1 vCPU and 512 MiB */
  reference?: ReferenceAgent;
  /** Back ends for the scratch home (protected profile). */
  backends: (scratchHome: string) => Partial<Record<Isolation, SandboxBackend>>;
  datasetsDir?: string | undefined;
  onProgress?: (e: ProgressEvent) => void;
  /** Told once the target is up (its description). */
  onReady?: (description: string) => void;
}

/** The reference agent: the operator's first agent, or the built-in default's shape. */
export function referenceAgent(config: CordonConfig, name?: string): ReferenceAgent {
  const entries = Object.entries(config.agents);
  const found = (name ? entries.find(([n]) => n === name) : entries[0])?.[1];
  if (name && !found) throw new Error(`agent ${name} is not in cordon.yaml`);
  const a = found as undefined | { isolation?: Isolation; egressMode?: 'enforce' | 'report'; egressLimits?: EgressLimitsOverride; resources?: { vcpus?: number; memoryMiB?: number } };
  return {
    isolation: a?.isolation ?? 'microvm',
    egressMode: a?.egressMode ?? 'enforce',
    vcpus: a?.resources?.vcpus ?? 1,
    memoryMiB: Math.max(512, a?.resources?.memoryMiB ?? 512),
    ...(a?.egressLimits ? { egressLimits: a.egressLimits } : {}),
  };
}

/**
 * The target's legitimate paths must work before anything is scored: the
 * allowed API (and, protected, the bound secret arriving there) and the model.
 * Otherwise a failed attack would look contained. @throws EnvironmentError
 */
export async function preflight(target: Target): Promise<void> {
  const a = target.addresses;
  const before = target.canaries.requests.length;
  const api = await target.sh(`curl -sS -m 20 -o /dev/null -w '%{http_code}' https://${a.apiHost}:${a.okPort}/preflight`, { timeoutMs: 30_000 });
  const got = target.canaries.requests.slice(before).find((r) => r.url === '/preflight');
  const problems: string[] = [];
  if (api.stdout.trim() !== '200' || !got) problems.push(`the allowed API did not answer (curl exit ${api.exitCode}, status ${api.stdout.trim() || '-'}: ${api.stderr.trim().slice(0, 200)})`);
  else if (target.profile === 'protected' && got.headers.authorization !== `Bearer ${target.secretValue}`) problems.push('the bound secret did not arrive at the allowed API');
  const model = await target.sh(`curl -sS -m 20 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -H "Authorization: Bearer $OPENAI_API_KEY" `
    + `-d '{"model":"${REDTEAM_MODEL}","messages":[{"role":"user","content":"preflight"}]}' "$OPENAI_BASE_URL/chat/completions"`, { timeoutMs: 30_000 });
  if (model.stdout.trim() !== '200') problems.push(`the model did not answer (curl exit ${model.exitCode}, status ${model.stdout.trim() || '-'}: ${model.stderr.trim().slice(0, 200)})`);
  if (problems.length > 0) {
    throw new EnvironmentError('env-redteam-preflight', `the ${target.profile} target is not working, so no attack could be judged: ${problems.join('; ')}`, {
      fix: 'run `cordon doctor`; check that the image boots (`cordon run -- true`) and that loopback is usable',
    });
  }
}

export async function runSession(o: SessionOptions): Promise<{ card: Scorecard; description: string }> {
  const secretValue = `rt-secret-${randomBytes(10).toString('hex')}`; // 30 bytes: its hex still fits one DNS label
  const providerKey = `sk-redteam-provider-${randomBytes(16).toString('hex')}`;
  const canaries = await startCanaries();
  let model: Awaited<ReturnType<typeof startHijackableModel>> | undefined;
  let deployment: Awaited<ReturnType<typeof startProtectedDeployment>> | undefined;
  let target: Target | undefined;
  try {
    model = await startHijackableModel(canaries);
    if (o.profile === 'protected') {
      deployment = await startProtectedDeployment({
        operatorConfig: o.operatorConfig, reference: o.reference ?? referenceAgent(o.operatorConfig), canaries,
        modelUrl: model.url, secretValue, providerKey, backends: o.backends,
      });
      target = await protectedTarget({ deployment, canaries, secretValue, providerKey });
    } else {
      target = await unprotectedTarget({ canaries, modelUrl: model.url, secretValue, providerKey });
    }
    await preflight(target);
    o.onReady?.(target.description);
    const card = await runAttacks({ target, attacks: o.attacks, datasetsDir: o.datasetsDir, ...(o.onProgress ? { onProgress: o.onProgress } : {}) });
    return { card, description: target.description };
  } finally {
    await target?.close().catch(() => undefined);
    await deployment?.close().catch(() => undefined);
    await model?.close().catch(() => undefined);
    await canaries.close().catch(() => undefined);
  }
}
