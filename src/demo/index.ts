/**
 * demo/: `cordon demo`, the whole system in one run. A control plane started
 * in this process on `$CORDON_HOME/demo`, a microVM running a small Python
 * agent loop that talks to a model through the gateway (the `scripted`
 * provider unless `--provider` names one of cordon.yaml), a local HTTPS API
 * reached with a secret the guest never sees, two refused destinations, one
 * request held until an operator approves it, and the audit log verified. The
 * verdict is read from the audit log.
 *
 * @example
 * const result = await runDemo({ home, userConfig, reporter: terminalReporter((t) => process.stdout.write(t)) });
 * process.exitCode = result.ok ? 0 : 1;
 */
export { runDemo, tcgNote, type DemoOptions, type DemoResult } from './run.js';
export { judgeOutcomes, METADATA_HOST, UNLISTED_HOST, type Outcome, type OutcomeId, type OutcomeInput } from './outcomes.js';
export { terminalReporter, silentReporter, eventLine, type DemoReporter, type AgentStep } from './render.js';
export { startDemoApi, DEMO_API_HOST, DEMO_SECRET, INJECTION_TEXT, type DemoApi, type SeenRequest } from './api.js';
export { demoConfig, pickModel, DEMO_AGENT, SCRIPTED_PROVIDER, type DemoModel } from './config.js';
export { preflight, demoHomeOf } from './preflight.js';
export { AGENT_PROGRAM, DEMO_TASK } from './agent-program.js';
