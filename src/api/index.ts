/**
 * Control-plane HTTP API: the app factory and operator tokens.
 */
export { createApi, type ApiOptions, type ApiAudit, type AuditQuery } from './app.js';
export {
  loadOrCreateOperatorToken,
  readOperatorToken,
  operatorTokenChecker,
  operatorTokenPath,
  OPERATOR_TOKEN_PREFIX,
  type OperatorToken,
} from './tokens.js';
