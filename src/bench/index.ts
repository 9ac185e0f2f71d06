/**
 * bench/: benchmarks behind `cordon bench PART`. Each returns figures grouped
 * by the system measured, with units in the key names.
 */
export { benchAudit } from './audit.js';
export { benchSandbox, type SandboxBenchOptions, type SandboxBenchResult, type BackendFigures } from './sandbox.js';
export { benchEgress, type EgressBenchOptions, type EgressBenchResult } from './egress.js';
export { formatTable as formatEgressTable, type DirectFigures, type ProxyFigures, type PeerEntry } from './egress-stats.js';
export { benchDetect, formatDetectText, tuneThresholds, type DetectBenchOptions, type DetectBenchResult } from './detect.js';
export { generateTraces, generateSession, createRng, AGENT_KINDS, ANOMALY_KINDS, type TraceSet, type TraceSession, type AgentKind, type AnomalyKind } from './detect-traces.js';
export { benchDetector, formatDetectorText, computeMetrics, chooseThreshold, type DetectorBenchOptions, type DetectorBenchResult, type Metrics } from './detector.js';
export { resolveDatasetsDir, hashSplit, loadDetectorSamples, type Sample } from './detector-data.js';
export { benchGateway, BENCH_KEY, type GatewayBenchOptions, type GatewayBenchResult } from './gateway.js';
export { formatGatewayTable, checkGoal as checkGatewayGoal, type GatewayFigures, type GatewayGoal, type SystemFigures as GatewaySystemFigures } from './gateway-stats.js';
export { benchIdentity, formatIdentityText, IDENTITY_ROWS, type IdentityBenchOptions, type IdentityBenchResult, type IdentityRow } from './identity.js';
export { benchSecrets, formatSecretsText, SECRETS_ROWS, type SecretsBenchOptions, type SecretsBenchResult, type SecretsRow } from './secrets.js';
export { type OpFigures, type MachineSetup } from './op-timing.js';
