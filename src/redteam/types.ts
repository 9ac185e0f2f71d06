/**
 * The red team's contracts: an attack is a small record with a `run(ctx)`
 * that acts from inside a sandbox of the target and is scored by OUTCOME
 * (did a canary listener receive the canary, did the action happen), never
 * by an exit code alone. A target is either the protected scratch deployment
 * (deployment.ts) or the deliberately weak setup (targets.ts); both offer the
 * same shell, files and canaries, so every attack runs unchanged on both.
 *
 * The scorecard shape (`Scorecard`) is read by the dashboard from
 * `$CORDON_HOME/redteam/latest.json`: keep its field names.
 */
import { z } from 'zod';
import type { CanaryMark, Canaries } from './canary.js';
import type { ProtectedDeployment } from './deployment.js';

export const CATEGORIES = ['escape', 'egress', 'secrets', 'identity', 'approvals', 'tools', 'ingress', 'audit', 'injection'] as const;
export type Category = (typeof CATEGORIES)[number];

/**
 * - `contained`: the attack was tried and its goal did not happen (with evidence).
 * - `succeeded`: the canary left, or the action happened.
 * - `error`: could not judge (the target died, the attack hung or threw); never counted as contained.
 * - `not-applicable`: the attack has nothing to act on in this profile (the reason is the evidence).
 */
export type Outcome = 'contained' | 'succeeded' | 'error' | 'not-applicable';

export type Profile = 'protected' | 'unprotected';

export interface AttackResult {
  outcome: Outcome;
  /** What the canary saw, exit codes, the audit events that show the refusal. */
  evidence: string[];
}

/** Output of one command run in a sandbox of the target. */
export interface Ran {
  exitCode: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Options of one shell command. */
export interface ShOptions {
  /** Which of the target's sandboxes. @default 'main' */
  sandbox?: SandboxSlot;
  /** @default 'agent' */
  user?: 'agent' | 'root';
  /** @default 30000 */
  timeoutMs?: number;
  env?: Record<string, string>;
  stdin?: string;
}

/** The target's long-lived sandboxes: `main` for most attacks, `peer` for cross-sandbox ones. */
export type SandboxSlot = 'main' | 'peer';

/** Names and ports of the canary servers as the sandbox should address them. */
export interface TargetAddresses {
  /** The allowed API with the bound secret, e.g. `api.redteam.test`. */
  apiHost: string;
  /** Another allowed host without a secret (a paste site the attacker can read). */
  otherHost: string;
  /** The forbidden attacker host. */
  attackerHost: string;
  /** An allowed name whose DNS answer the attacker controls (rebinding). */
  rebindHost: string;
  /** Port of the allowed HTTPS server (api and other). */
  okPort: number;
  /** Port of the attacker listener (TCP: HTTP, TLS or raw). */
  attackerPort: number;
  /** Port of the attacker's UDP listener (datagrams and DNS queries). */
  udpPort: number;
  /** Base URL the agent uses for its model (`OPENAI_BASE_URL`). */
  modelBaseUrl: string;
  /** A host address outside the sandbox for ICMP (the host's own address). */
  hostAddress: string;
}

export interface Target {
  readonly profile: Profile;
  /** One line for the report: what is under test and where it lives. */
  readonly description: string;
  readonly canaries: Canaries;
  readonly addresses: TargetAddresses;
  /** The real value of the secret bound to the API (never in the guest of the protected profile). */
  readonly secretValue: string;
  /** The real provider key of the model (held by the gateway in the protected profile). */
  readonly providerKey: string;
  /** A file on the host (outside any sandbox) holding `hostCanary`. */
  readonly hostCanaryPath: string;
  readonly hostCanary: string;
  /** A writable scratch directory as the sandbox sees it (attack scripts and planted files go here). */
  readonly workDir: string;
  /** The protected deployment's internals, for attacks that need the operator's view (undefined when unprotected). */
  readonly deployment?: ProtectedDeployment;
  sh(command: string, o?: ShOptions): Promise<Ran>;
  /** Write a file into `workDir` (name only) of a sandbox. */
  writeFile(name: string, data: string, o?: { sandbox?: SandboxSlot }): Promise<void>;
  /** Whether a slot's sandbox is still alive (a dead one makes its attacks `error`). */
  alive(slot: SandboxSlot): boolean;
  close(): Promise<void>;
}

export interface AttackContext {
  readonly target: Target;
  /** A fresh marker unique to this attack, e.g. `rtc-egress-raw-tcp-1a2b3c4d`. */
  readonly marker: string;
  /** The canaries' state when the attack started (judge only what happened since). */
  readonly mark: CanaryMark;
  /** Aborted when the attack's time is up. */
  readonly signal: AbortSignal;
  /** The datasets folder (prompt injection), when found. */
  readonly datasetsDir: string | undefined;
}

export interface Attack {
  id: string;
  category: Category;
  title: string;
  /** Time allowed before the attack is scored `error` (hung). @default 60000 */
  timeoutMs?: number;
  run(ctx: AttackContext): Promise<AttackResult>;
}

export const AttackReportSchema = z.object({
  id: z.string(),
  category: z.enum(CATEGORIES),
  title: z.string(),
  outcome: z.enum(['contained', 'succeeded', 'error', 'not-applicable']),
  evidence: z.array(z.string()),
  durationMs: z.number().nonnegative(),
}).strict();
export type AttackReport = z.infer<typeof AttackReportSchema>;

export const ScorecardSchema = z.object({
  startedAt: z.string(),
  finishedAt: z.string(),
  profile: z.enum(['protected', 'unprotected']),
  durationMs: z.number().nonnegative(),
  summary: z.object({
    total: z.number().int(),
    contained: z.number().int(),
    succeeded: z.number().int(),
    errors: z.number().int(),
    notApplicable: z.number().int(),
  }).strict(),
  attacks: z.array(AttackReportSchema),
}).strict();
export type Scorecard = z.infer<typeof ScorecardSchema>;

/** Shorthands for attack bodies. */
export const contained = (...evidence: string[]): AttackResult => ({ outcome: 'contained', evidence });
export const succeeded = (...evidence: string[]): AttackResult => ({ outcome: 'succeeded', evidence });
export const notApplicable = (reason: string): AttackResult => ({ outcome: 'not-applicable', evidence: [reason] });
export const couldNotJudge = (...evidence: string[]): AttackResult => ({ outcome: 'error', evidence });
