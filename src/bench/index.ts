/**
 * bench/: benchmarks behind `cordon bench PART`. Each returns figures grouped
 * by the system measured, with units in the key names.
 */
export { benchAudit } from './audit.js';
export { benchSandbox, type SandboxBenchOptions, type SandboxBenchResult, type BackendFigures } from './sandbox.js';
export { benchEgress, type EgressBenchOptions, type EgressBenchResult } from './egress.js';
export { formatTable as formatEgressTable, type DirectFigures, type ProxyFigures, type PeerEntry } from './egress-stats.js';
