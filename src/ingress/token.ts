/**
 * Secrets of a tunnel: its id, its one-time token and the session cookies it
 * is exchanged for. Only SHA-256 hashes of the token and of the sessions are
 * kept; comparisons are constant-time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Query parameter that carries the one-time token on the first request. */
export const TOKEN_PARAM = 'cordon_tunnel_token';
/** Tunnel ids: `tn-` and 20 lower-case base32 characters (100 random bits). */
export const TUNNEL_ID = /^tn-[a-z2-7]{20}$/;
/** Token bytes: 256 random bits, base64url (43 characters). */
const TOKEN_BYTES = 32;

export function newTunnelId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  return 'tn-' + [...randomBytes(20)].map((b) => alphabet[b & 31]).join('');
}

/** A fresh random secret (token or session), base64url. */
export function newSecret(): string {
  return randomBytes(TOKEN_BYTES).toString('base64url');
}

export function sha256(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/** Whether `presented` hashes to `hash`, in constant time (for a given hash length). */
export function secretMatches(presented: string, hash: Buffer): boolean {
  if (presented.length === 0 || presented.length > 512) return false;
  return timingSafeEqual(sha256(presented), hash);
}

/** The name of the session cookie of one tunnel (so two tunnels on one host never share one). */
export function cookieName(tunnelId: string): string {
  return `cordon_tunnel_${tunnelId.slice(3)}`;
}

/** `Set-Cookie` for a session: HttpOnly, SameSite=Strict, whole site, ends with the browser session. */
export function sessionCookie(tunnelId: string, session: string): string {
  return `${cookieName(tunnelId)}=${session}; Path=/; HttpOnly; SameSite=Strict`;
}

/**
 * Split a Cookie header into this tunnel's session value (if any) and the
 * header to pass on without it (undefined when nothing is left).
 */
export function takeSessionCookie(header: string | undefined, tunnelId: string): { session: string | undefined; rest: string | undefined } {
  if (!header) return { session: undefined, rest: undefined };
  const name = cookieName(tunnelId);
  let session: string | undefined;
  const rest: string[] = [];
  for (const part of header.split(';')) {
    const trimmed = part.trim();
    if (trimmed === '') continue;
    const eq = trimmed.indexOf('=');
    const key = eq < 0 ? trimmed : trimmed.slice(0, eq);
    // Every cordon tunnel cookie stays on the host, not only this tunnel's.
    if (key.startsWith('cordon_tunnel_')) {
      if (key === name) session ??= trimmed.slice(eq + 1);
      continue;
    }
    rest.push(trimmed);
  }
  return { session, rest: rest.length > 0 ? rest.join('; ') : undefined };
}
