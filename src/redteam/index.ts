/**
 * redteam/: `cordon redteam` attacks a deployment from inside real sandboxes
 * (escape, egress bypass, secret exfiltration, identity and approval abuse,
 * the tools gateway, ingress tunnels, audit tampering, prompt injection
 * through the model) and scores each
 * attack by outcome: did the canary leave, did the action happen. The
 * protected profile runs against a scratch deployment built from the
 * operator's settings; the unprotected profile against a deliberately weak
 * setup, to show the attacks are real. See docs/redteam.md.
 *
 * @example
 * const { card } = await runSession({ profile: 'protected', attacks: selectAttacks(), operatorConfig, backends: (h) => createBackends({ home: h }) });
 */
export { ALL_ATTACKS, selectAttacks } from './attacks/index.js';
export { runSession, referenceAgent, type SessionOptions } from './session.js';
export { runAttacks, markerFor, refusalEvidence, DEFAULT_ATTACK_TIMEOUT_MS, type ProgressEvent, type RunOptions } from './run.js';
export { formatText, formatHtml, formatComparison, escapeHtml, latestPath, writeScorecard } from './report.js';
export { startCanaries, type Canaries } from './canary.js';
export { startHijackableModel, injectedLink, REDTEAM_MODEL } from './model.js';
export { startProtectedDeployment, redteamConfig, REDTEAM_AGENT, type ProtectedDeployment, type ReferenceAgent } from './deployment.js';
export { protectedTarget, unprotectedTarget } from './targets.js';
export {
  CATEGORIES, ScorecardSchema, AttackReportSchema,
  type Attack, type AttackContext, type AttackReport, type AttackResult, type Category, type Outcome, type Profile, type Scorecard, type Target,
} from './types.js';
