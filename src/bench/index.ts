/**
 * bench/: benchmarks behind `cordon bench PART`. Each returns figures grouped
 * by the system measured, with units in the key names.
 */
export { benchAudit } from './audit.js';
export { benchSandbox, type SandboxBenchOptions, type SandboxBenchResult, type BackendFigures } from './sandbox.js';
