/**
 * ingress/: temporary, authenticated tunnels into a sandbox, the only way in
 * (see tunnels.ts for lifetimes and audit, gate.ts for authentication).
 */
export {
  DEFAULT_TUNNEL_IDLE_MS, DEFAULT_TUNNEL_TTL_MS, createTunnelManager, tunnelOpenSchema,
} from './tunnels.js';
export type {
  OpenedTunnel, TunnelAudit, TunnelCloseReason, TunnelInfo, TunnelManager, TunnelManagerOptions, TunnelOpenOptions, TunnelSandboxes,
} from './tunnels.js';
export type { RefusalReason } from './gate.js';
export { TOKEN_PARAM, TUNNEL_ID, cookieName } from './token.js';
