/**
 * The cordon TypeScript SDK, over the control-plane API.
 *
 * @example
 * import { Sandbox } from 'cordon';
 * const sb = await Sandbox.create({ agent: 'default' });
 * try {
 *   const r = await sb.commands.run('echo hello', { onStdout: (s) => process.stdout.write(s) });
 *   console.log('exit', r.exitCode);
 * } finally {
 *   await sb.kill();
 * }
 *
 * Errors are the `CordonError` subclasses of cordon itself (`NotFoundError`,
 * `InvalidInputError`, `AuthError`, …), each with a `code` and a `fix`.
 */
export { Sandbox, Commands, Files } from './sandbox.js';
export type { SandboxCreateOptions, CommandRunOptions, CommandResult, FileReadOptions, FileWriteOptions } from './sandbox.js';
export { CordonClient } from './client.js';
export type { ExecRequest, ExecStreamOptions } from './client.js';
export { OperatorClient } from './operator-client.js';
export type { OperatorClientOptions, EventStreamOptions } from './operator-client.js';
export type * from './api-types.js';
export {
  DAEMON_FILE, daemonFilePath, daemonFileSchema, findDaemon, removeDaemonFile, resolveConnection, writeDaemonFile,
} from './discovery.js';
export type { Connection, ConnectionOptions, DaemonFile } from './discovery.js';
export { errorFromApi } from './errors.js';
export {
  CordonError, AuditError, AuthError, ConfigError, EnvironmentError, ForbiddenError, InvalidInputError, KeyError,
  LimitError, NotFoundError, PolicyDeniedError, SandboxError, StoreError,
} from '../errors/index.js';
export type { SandboxInfo, SandboxState, IsolationTier, Isolation } from '../sandbox/index.js';
export type { ExecResult } from '../sandbox/protocol/index.js';
export { CORDON_VERSION } from '../version.js';
