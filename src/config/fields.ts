/**
 * Small zod building blocks shared by the config schema: fields that carry a
 * plain-English problem and a concrete fix when they fail. A failing check adds
 * a `custom` issue whose `message` is the problem and whose `params.fix` is the
 * fix; `errors/format.ts` turns those into {@link ConfigIssue}s.
 */
import { z } from 'zod';
import { tryParseDuration, DURATION_EXAMPLES } from './duration.js';
import { validateHostPattern, validateCidr } from './hosts.js';
import { scanTemplate } from './templates.js';
import { show } from './errors/format.js';

/** Record a problem and its fix on the value being checked. */
export function addProblem(ctx: z.RefinementCtx, problem: string, fix: string, path?: (string | number)[]): void {
  ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem, params: { fix }, ...(path ? { path } : {}) });
}

/** A string that must match `re`; `what` names the thing in the message. */
export function patternString(re: RegExp, what: string, fix: string) {
  return z.string().superRefine((value, ctx) => {
    if (!re.test(value)) addProblem(ctx, `"${value}" is not a valid ${what}`, fix);
  });
}

/**
 * A duration string such as `30s`; the parsed value is added by the enclosing
 * object as `<field>Ms`. A bare YAML number (`30`) is reported as a duration
 * without a unit rather than as a type error.
 * @param minMs smallest allowed duration @default 1000
 */
export function durationString(minMs = 1000) {
  return z.unknown().transform((value, ctx): string => {
    if (typeof value !== 'string' && typeof value !== 'number') {
      addProblem(ctx, `expected a duration, got ${show(value)}`, `write a number with a unit, e.g. ${DURATION_EXAMPLES}`);
      return z.NEVER;
    }
    const r = tryParseDuration(String(value));
    if (!r.ok) {
      addProblem(ctx, `"${value}" is not a duration: ${r.problem}`, r.fix);
      return z.NEVER;
    }
    if (r.ms < minMs) {
      addProblem(ctx, `"${value}" is too short (minimum ${minMs} ms)`, `use at least ${minMs >= 1000 ? `${minMs / 1000}s` : `${minMs}ms`}; durations look like ${DURATION_EXAMPLES}`);
      return z.NEVER;
    }
    return String(value);
  });
}

/** An egress host pattern, normalised to lowercase. */
export const hostPattern = z.string().transform((value, ctx) => {
  const r = validateHostPattern(value);
  if (!r.ok) {
    addProblem(ctx, r.problem, r.fix);
    return z.NEVER;
  }
  return r.normalized;
});

/** A CIDR range, normalised (`10.0.0.0/8`, `2001:db8::/32`). */
export const cidrRange = z.string().transform((value, ctx) => {
  const r = validateCidr(value);
  if (!r.ok) {
    addProblem(ctx, r.problem, r.fix);
    return z.NEVER;
  }
  return r.normalized;
});

/** A TCP port. */
export const port = z.number().int().min(1).max(65535);

/** A whole number in `[min, max]`. */
export function intRange(min: number, max: number) {
  return z.number().int().min(min).max(max);
}

/**
 * A string that must contain at least one `{{secret.NAME}}` reference, so that
 * credentials are never written into the file itself.
 */
export function secretTemplate(what: string) {
  return z.string().superRefine((value, ctx) => {
    if (scanTemplate(value).secrets.length === 0) {
      addProblem(
        ctx,
        `the ${what} contains no {{secret.NAME}} reference; credentials must not be written into the config`,
        'declare the credential under secrets: and refer to it, e.g. "Bearer {{secret.api_token}}"',
      );
    }
  });
}

/**
 * An http(s) URL without credentials, query or fragment.
 * @param what names the URL in messages, e.g. "provider base URL".
 */
export function httpUrl(what: string) {
  return z.string().superRefine((value, ctx) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return addProblem(ctx, `"${value}" is not a URL`, `write the full ${what}, e.g. "https://api.example.com/v1"`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      return addProblem(ctx, `"${value}" uses ${url.protocol.replace(':', '')}://, not http:// or https://`, `use an https:// ${what}`);
    }
    if (url.username || url.password) {
      return addProblem(ctx, `"${value}" contains credentials`, 'remove "user:password@" from the URL; put keys in secrets:');
    }
    if (url.search || url.hash) {
      addProblem(ctx, `"${value}" has a query or fragment`, `remove the "?…" or "#…" part of the ${what}`);
    }
  });
}
