/**
 * secrets/: where credentials live and how they are used without entering a
 * sandbox.
 *
 * - An encrypted file store (`$CORDON_HOME/secrets.enc`, AES-256-GCM, master
 *   key from `CORDON_MASTER_KEY` or `$CORDON_HOME/keys/master.key`, which
 *   `rotateMasterKey` replaces, re-encrypting the store), plus the
 *   `env` and `command` sources; `resolveAgentSecrets` reads every secret an
 *   agent refers to and fails with one error listing each problem.
 * - Per-sandbox placeholders: `createSandboxSecrets` renders the agent's guest
 *   env with random placeholders and keeps the real values outside the guest.
 * - The request side for the egress proxy, pure: `scan` (run first: a real
 *   value in any encoding, or a placeholder to an unbound host, is a finding)
 *   and `substitute` (real values into the headers bound to the host), and
 *   `createSecretsRequestHook`, both as the egress proxy's request hook.
 * - The response side: `createReflectionScrubber` masks real values an
 *   upstream reflects (headers and streamed bodies), reported as
 *   `secret.reflected` through the hook's `onReflected`.
 *
 * Values are `SecretValue`s, which print as `[secret NAME]`; errors name
 * secrets, never values.
 */
export { SecretError, type SecretProblem } from './errors.js';
export { SecretValue, checkSecretBytes, trimTrailingNewline, MIN_SECRET_BYTES, MAX_SECRET_BYTES } from './value.js';
export {
  loadMasterKey, parseMasterKey, masterKeyPath, MASTER_KEY_ENV, MASTER_KEY_BYTES,
  type MasterKey, type LoadMasterKeyOptions,
} from './masterkey.js';
export { masterKeyId, STORE_FORMAT_VERSION } from './format.js';
export {
  openSecretStore, secretStorePath, STORE_FILE, MAX_STORE_BYTES,
  type SecretStore, type SecretStoreOptions, type SecretMeta, type SetResult,
} from './store.js';
export {
  rotateMasterKey, finishInterruptedRotation,
  type RotateMasterKeyOptions, type RotateMasterKeyResult, type RotationStep, type InterruptedRotation,
} from './rotate.js';
export { pendingMasterKeyPath } from './masterkey.js';
export { runSecretCommand, type RunSecretCommandOptions } from './command.js';
export {
  resolveSecrets, resolveAgentSecrets, agentSecretNames,
  type ResolvedSecrets, type ResolveSecretsOptions,
} from './resolve.js';
export { compileSecretRules, ruleFor, isBound, type SecretRule, type HeaderBinding, type RequestTarget } from './bindings.js';
export {
  createSandboxSecrets, newPlaceholder, PLACEHOLDER_PREFIX, PLACEHOLDER_PATTERN,
  type SandboxSecrets, type SandboxSecretsOptions, type PlaceholderInfo,
} from './placeholders.js';
export type { MatcherFactory } from './patterns.js';
export { substitute, type SubstituteRequest, type SubstituteResult, type SubstituteContext } from './substitute.js';
export {
  createExfiltrationScanner, scanForExfiltration,
  type ExfiltrationScanner, type ExfiltrationFinding, type ExfiltrationKind, type ExfiltrationWhere,
  type ScanHead, type ScanRequest, type BodyScanner, type BodyScanResult, type ScannerInput, type HeaderMap,
} from './scan.js';
export {
  createSecretsRequestHook, describeFinding, EXFILTRATION_REASON,
  type SecretsHookRequest, type SecretsHookResult, type SecretsHookOptions,
} from './hook.js';
export { valuePatterns, percentDecode, type SecretEncoding, type BytePattern } from './encodings.js';
export { createSecretsRouter, type SecretsRouter } from './router.js';
export {
  createReflectionScrubber, REFLECTION_MASK_BYTE,
  type ReflectionScrubber, type ReflectionBodyScrubber, type ReflectedCount,
} from './reflect.js';
export {
  createResponseScrub, UNSCANNABLE_REASON,
  type ReflectedReport, type ReflectedWhere, type SecretsResponseHead, type SecretsResponseResult, type ResponseScrubOptions,
} from './response-hook.js';
