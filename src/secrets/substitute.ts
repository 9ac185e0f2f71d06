/**
 * Placeholder substitution, the one place where a real secret value is put
 * into a request. For a request to a host whose rule binds headers (see
 * bindings.ts), each bound header is set as follows: when the guest's value
 * of that header carries the placeholder of a secret the header's template
 * refers to, each such placeholder is replaced in place (the agent chose the
 * format, e.g. `token <placeholder>`); otherwise the header is set to its
 * template with the real values, replacing whatever the guest sent. Nothing
 * else in the request changes, and requests to other hosts are returned
 * unchanged. Run the exfiltration scanner on the guest's request first.
 */
import { renderTemplate } from '../config/index.js';
import { ruleFor, type RequestTarget, type SecretRule } from './bindings.js';
import { SecretError } from './errors.js';
import type { HeaderMap } from './scan.js';
import type { SecretValue } from './value.js';

export interface SubstituteRequest extends RequestTarget {
  headers: HeaderMap;
  /** Passed through unchanged: bodies carry no bound positions. */
  body?: Uint8Array;
}

export interface SubstituteResult {
  /** A new header map; the input is not changed. */
  headers: HeaderMap;
  /** What was put where: secret names and lower-case header names, for the audit log (never values). */
  substituted: Array<{ secret: string; header: string }>;
  /** The rule whose bindings applied, when one did. */
  ruleId?: string;
}

export interface SubstituteContext {
  rules: readonly SecretRule[];
  values: ReadonlyMap<string, SecretValue>;
  /** Secret name → this sandbox's placeholder. */
  placeholderOf(secret: string): string | undefined;
}

/**
 * Put the real values into the headers bound to the request's host.
 * @throws SecretError `secret-unresolved` when a bound secret has no value (the proxy must refuse the request)
 */
export function substitute(request: SubstituteRequest, ctx: SubstituteContext): SubstituteResult {
  const headers: HeaderMap = { ...request.headers };
  const rule = ruleFor(ctx.rules, request);
  if (!rule || rule.headers.length === 0) return { headers, substituted: [] };
  const substituted: SubstituteResult['substituted'] = [];
  const real = (name: string): string => {
    const value = ctx.values.get(name);
    if (!value) {
      throw new SecretError('secret-unresolved', `the secret ${name} bound by ${rule.ruleId} has no value in this sandbox`, {
        fix: 'recreate the sandbox so that its secrets are resolved again',
        details: { secret: name, ruleId: rule.ruleId },
      });
    }
    return value.reveal();
  };
  for (const binding of rule.headers) {
    const keys = Object.keys(headers).filter((k) => k.toLowerCase() === binding.header);
    const bound = binding.secrets.flatMap((s) => {
      const ph = ctx.placeholderOf(s);
      return ph ? [{ secret: s, placeholder: ph }] : [];
    });
    const carries = (v: unknown): boolean => bound.some((b) => String(v).includes(b.placeholder));
    const inPlace = keys.some((k) => {
      const v = headers[k];
      return Array.isArray(v) ? v.some(carries) : carries(v);
    });
    if (inPlace) {
      const used = new Set<string>();
      const swap = (v: string | number): string => {
        let out = String(v);
        for (const b of bound) {
          if (!out.includes(b.placeholder)) continue;
          const value = real(b.secret);
          out = out.replaceAll(b.placeholder, () => value); // a function: `$&` in a value stays literal
          used.add(b.secret);
        }
        return out;
      };
      for (const k of keys) {
        const v = headers[k];
        if (v !== undefined) headers[k] = Array.isArray(v) ? v.map(swap) : swap(v as string | number);
      }
      for (const secret of used) substituted.push({ secret, header: binding.header });
    } else {
      for (const k of keys) delete headers[k];
      headers[binding.header] = renderTemplate(binding.template, real);
      for (const secret of binding.secrets) substituted.push({ secret, header: binding.header });
    }
  }
  return { headers, substituted, ruleId: rule.ruleId };
}
