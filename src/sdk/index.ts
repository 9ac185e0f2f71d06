/**
 * sdk/: the TypeScript SDK over the control-plane API. Not built yet: the
 * `Sandbox` class lands with the microVM issue.
 */
export { CordonError } from "../errors/index.js";
export { CORDON_VERSION } from "../version.js";
