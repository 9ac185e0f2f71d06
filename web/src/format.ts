/**
 * Plain wording for what the API returns: ages, isolation tiers, states.
 */
import type { WireIsolationTier } from '../../src/sdk/api-types.js';

/** "250 ms", "4s", "3m 20s", "2h 5m", "3d 4h" from a duration in ms (negative is shown as 0s). */
export function duration(ms: number): string {
  if (ms > 0 && ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function age(iso: string, now: number): string {
  return duration(now - Date.parse(iso));
}

/** "in 4m 2s" or "4s ago". */
export function until(iso: string, now: number): string {
  const left = Date.parse(iso) - now;
  return left >= 0 ? `in ${duration(left)}` : `${duration(-left)} ago`;
}

export function clock(iso: string | undefined): string {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { hour12: false });
}

/** The isolation tier, stated plainly (with what it means for trust). */
export function tierLabel(tier: WireIsolationTier): { short: string; detail: string; strong: boolean } {
  switch (tier) {
    case 'microvm-kvm': return { short: 'microVM · KVM', detail: 'own kernel, hardware virtualisation', strong: true };
    case 'microvm-tcg': return { short: 'microVM · TCG', detail: 'own kernel, software emulation (slower; no KVM here)', strong: true };
    case 'gvisor': return { short: 'gVisor', detail: 'user-space kernel; weaker than a microVM', strong: false };
    case 'bubblewrap': return { short: 'bubblewrap', detail: 'development only: shares the host kernel', strong: false };
    default: return { short: String(tier), detail: 'unknown tier', strong: false };
  }
}

export function mib(n: number | undefined): string {
  if (n === undefined) return '—';
  return n >= 1024 ? `${(n / 1024).toFixed(1)} GiB` : `${n.toFixed(n < 10 ? 1 : 0)} MiB`;
}

/** A short one-line summary of an audit event's data. */
export function summarise(data: Record<string, unknown>, keys: string[]): string {
  const parts: string[] = [];
  for (const k of keys) {
    const v = data[k];
    if (v === undefined || v === null || v === '') continue;
    parts.push(`${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  }
  return parts.join(' ');
}
