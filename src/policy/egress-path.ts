/**
 * Request paths and path globs for egress method/path rules.
 *
 * A path is normalised before it is matched, so that a rule cannot be walked
 * around by writing the same resource differently: the query and fragment are
 * dropped, percent-encoded unreserved characters are decoded (RFC 3986
 * §6.2.2.2), `;params` are dropped from each segment (as servlet containers do
 * before routing), one trailing slash is ignored, and matching ignores case. Paths a
 * server might read in more than one way are refused outright: dot segments
 * (`/a/../b`, also encoded), encoded slashes or backslashes (`%2F`, `%5C`), NUL,
 * empty segments (`//`), whitespace, control and non-ASCII characters.
 *
 * Globs work on segments: `*` inside a segment matches any characters but `/`
 * (`/repos/*` matches `/repos/x`, not `/repos/x/y`), a segment of exactly `**`
 * matches zero or more segments (`/api/**` matches `/api`, `/api/a/b`).
 */

/** Longest request path considered; longer paths are refused. */
export const MAX_PATH_CHARS = 8192;

const UNRESERVED = /^[A-Za-z0-9._~-]$/;

/**
 * Normalise a request path (origin form, as sent on the request line), or
 * return undefined if it is ambiguous or malformed and must be refused.
 * @example normalizeRequestPath('/Repos/a/%62/?q=1') // '/repos/a/b'
 */
export function normalizeRequestPath(raw: string): string | undefined {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > MAX_PATH_CHARS) return undefined;
  const path = raw.split(/[?#]/, 1)[0]!;
  if (!path.startsWith('/')) return undefined;
  const segments = splitSegments(path);
  return segments && `/${segments.join('/')}`;
}

/** Split a path or a path glob into normalised, lower-case segments; undefined if it must be refused. */
function splitSegments(path: string): string[] | undefined {
  if (/[^\x21-\x7e]/.test(path) || path.includes('\\')) return undefined;
  const parts = path.slice(1).split('/');
  if (parts.length > 1 && parts[parts.length - 1] === '') parts.pop();
  if (parts.length === 1 && parts[0] === '') return [];
  const out: string[] = [];
  for (const part of parts) {
    // Servlet containers drop ";params" from each segment before routing; match what they route.
    const segment = decodeUnreserved(part.split(';', 1)[0]!);
    if (segment === undefined || segment === '' || segment === '.' || segment === '..') return undefined;
    out.push(segment.toLowerCase());
  }
  return out;
}

/** Decode %XX of unreserved characters; refuse bad escapes and escapes that change the path's structure. */
function decodeUnreserved(segment: string): string | undefined {
  if (!segment.includes('%')) return segment;
  let out = '';
  for (let i = 0; i < segment.length; i++) {
    const ch = segment[i]!;
    if (ch !== '%') { out += ch; continue; }
    const hex = segment.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
    const code = parseInt(hex, 16);
    // "/" and "\" change segments on some servers; NUL and other controls end strings on others.
    if (code === 0x2f || code === 0x5c || code < 0x20 || code === 0x7f) return undefined;
    const decoded = String.fromCharCode(code);
    out += UNRESERVED.test(decoded) ? decoded : `%${hex.toUpperCase()}`;
    i += 2;
  }
  return out;
}

export type PathMatcher = (normalizedPath: string) => boolean;

/**
 * Compile a path glob into a matcher over normalised paths, or undefined if
 * the glob itself is malformed (a rule that cannot be read must not decide).
 * @example compilePathGlob('/repos/*\/*\/pulls/**')!('/repos/a/b/pulls/1/merge') // true
 */
export function compilePathGlob(pattern: string): PathMatcher | undefined {
  if (typeof pattern !== 'string' || !pattern.startsWith('/')) return undefined;
  const segments = splitSegments(pattern);
  if (!segments) return undefined;
  const compiled = segments.map((s) => (s === '**' ? '**' : segmentRegExp(s)));
  return function matchPath(normalizedPath: string): boolean {
    const path = normalizedPath === '/' ? [] : normalizedPath.slice(1).split('/');
    return matchSegments(compiled, path);
  };
}

function segmentRegExp(segment: string): RegExp {
  const body = segment.split('*').map((lit) => lit.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*');
  return new RegExp(`^${body}$`);
}

/** Glob match with `**` as zero or more segments; dynamic programming, so no exponential backtracking. */
function matchSegments(pattern: ReadonlyArray<RegExp | '**'>, path: readonly string[]): boolean {
  // reach[j]: the first i pattern segments can match the first j path segments.
  let reach = new Array<boolean>(path.length + 1).fill(false);
  reach[0] = true;
  for (const p of pattern) {
    const next = new Array<boolean>(path.length + 1).fill(false);
    for (let j = 0; j <= path.length; j++) {
      if (p === '**') {
        next[j] = reach[j]! || (j > 0 && next[j - 1]!);
      } else if (j > 0 && reach[j - 1] && p.test(path[j - 1]!)) {
        next[j] = true;
      }
    }
    reach = next;
  }
  return reach[path.length]!;
}
