/**
 * Feature extraction: what one audit event says about an agent's behaviour.
 * Pure functions, no state. An event yields categorical features (a domain
 * and its public suffix, a port, a tool, a command, a file path key and its
 * credential class, a model), scored for novelty, and
 * amounts (requests, bytes out, model tokens), summed per minute and scored
 * for rate and volume. Unknown event types yield `undefined` so the detector
 * can count what it ignored; known types without behaviour yield nothing.
 *
 * @example
 * features({ ts, type: 'egress.request', data: { host: 'files.pythonhosted.org', port: 443 } })
 * // categories: domain pythonhosted.org (context org), suffix org, host files.pythonhosted.org, port 443; amounts: { requests: 1 }
 */
import { sensitiveClassOf } from './sensitive.js';

/** The part of an audit event the detector reads. */
export interface DetectEvent {
  seq?: number;
  ts: string;
  type: string;
  agent?: string;
  sandbox?: string;
  decision?: string;
  data?: Record<string, unknown>;
}

export const CATEGORY_FEATURES = ['domain', 'suffix', 'host', 'port', 'tool', 'command', 'command.arg', 'path.area', 'path', 'sensitive', 'model'] as const;
export type CategoryFeature = (typeof CATEGORY_FEATURES)[number];

export const AMOUNT_FEATURES = ['requests', 'bytesOut', 'tokens'] as const;
export type AmountFeature = (typeof AMOUNT_FEATURES)[number];

export interface Category {
  feature: CategoryFeature;
  /** The normalised value compared against the baseline. */
  value: string;
  /** What the event actually said (e.g. the full path), for the evidence. */
  raw?: string;
  /**
   * A coarser value the new value falls under (a domain's public suffix, a
   * path's area): where an agent's discoveries usually happen, a new value is
   * weaker evidence than one in a context where it never discovers anything.
   */
  context?: string;
}

export interface Features {
  categories: Category[];
  amounts: Partial<Record<AmountFeature, number>>;
  /** For bytes out: the site (registrable domain) they went to, when the event names the host. */
  site?: string;
}

/** Event types that carry no behaviour the detector models (life cycle, results, its own alerts). */
const QUIET_TYPES = new Set([
  'sandbox.create', 'sandbox.ready', 'sandbox.setup', 'sandbox.destroy', 'sandbox.token', 'sandbox.token.failure',
  'sandbox.protocol-error', 'sandbox.exec.result', 'sandbox.pause', 'sandbox.resume', 'llm.auth',
  'egress.exfiltration', 'secret.reflected', 'detect.alert', 'detect.ack', 'detect.error', 'detect.action-failed', 'detect.notify-failed', 'telemetry.dropped',
]);

const str = (v: unknown, max = 512): string | undefined => (typeof v === 'string' && v.length > 0 ? v.slice(0, max) : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined);

/**
 * The features of one event, or `undefined` when its type is unknown.
 * @param e an audit event (fields the detector does not read are ignored)
 */
export function features(e: DetectEvent): Features | undefined {
  const data = e.data ?? {};
  const out: Features = { categories: [], amounts: {} };
  const cat = (feature: CategoryFeature, value: string | undefined, raw?: string, context?: string): void => {
    if (value === undefined) return;
    const c: Category = raw !== undefined && raw !== value ? { feature, value, raw } : { feature, value };
    if (context !== undefined) c.context = context;
    out.categories.push(c);
  };
  switch (e.type) {
    case 'egress.request': {
      const host = normaliseHost(str(data.host, 253));
      const suffix = host === undefined ? undefined : suffixOf(host);
      cat('domain', host === undefined ? undefined : siteOf(host), host, suffix);
      cat('suffix', suffix, host);
      cat('host', host);
      const port = num(data.port);
      cat('port', port === undefined ? undefined : String(port));
      out.amounts.requests = 1;
      return out;
    }
    case 'egress.refusals': {
      // Refusals past a door's audit budget: they count as requests, and the hosts they named as seen.
      const count = num(data.count);
      if (count !== undefined) out.amounts.requests = count;
      const hosts = Array.isArray(data.hosts) ? data.hosts.slice(0, 10) : [];
      for (const raw of hosts) {
        const host = normaliseHost(str(raw, 253));
        const suffix = host === undefined ? undefined : suffixOf(host);
        cat('domain', host === undefined ? undefined : siteOf(host), host, suffix);
        cat('suffix', suffix, host);
        cat('host', host);
      }
      return out;
    }
    case 'egress.close': {
      const bytes = num(data.bytesOut);
      if (bytes !== undefined) out.amounts.bytesOut = bytes;
      const host = normaliseHost(str(data.host, 253));
      if (host !== undefined) out.site = siteOf(host);
      return out;
    }
    case 'sandbox.exec': {
      const argv = Array.isArray(data.argv) ? data.argv.filter((a): a is string => typeof a === 'string') : [];
      const cmd = commandKey(argv);
      if (cmd) {
        cat('command', cmd.program, argv[0]);
        cat('command.arg', cmd.withArg, argv.slice(0, 2).join(' '));
      }
      return out;
    }
    case 'sandbox.file.read':
    case 'sandbox.file.write':
    case 'guest.file.open': {
      const path = str(data.path, 4096);
      const key = path === undefined ? undefined : pathKey(path);
      const area = key === undefined ? undefined : areaOf(key);
      cat('path.area', area, path);
      cat('path', key, path, area);
      cat('sensitive', path === undefined ? undefined : sensitiveClassOf(path), path);
      return out;
    }
    case 'tool.call': {
      const tool = str(data.tool, 256);
      const server = str(data.server, 256);
      cat('tool', tool === undefined ? undefined : server ? `${server}/${tool}` : tool);
      out.amounts.requests = 1;
      return out;
    }
    case 'llm.request': {
      cat('model', str(data.model, 256));
      out.amounts.requests = 1;
      return out;
    }
    case 'llm.response': {
      const tokens = (num(data.tokensIn) ?? 0) + (num(data.tokensOut) ?? 0);
      if (tokens > 0) out.amounts.tokens = tokens;
      return out;
    }
    default:
      return QUIET_TYPES.has(e.type) ? out : undefined;
  }
}

function normaliseHost(host: string | undefined): string | undefined {
  if (host === undefined) return undefined;
  return host.toLowerCase().replace(/\.$/, '');
}

/** Second-level labels under which registrations happen one level deeper (`example.co.uk`). */
const SECOND_LEVEL = new Set(['co', 'com', 'ac', 'gov', 'org', 'net', 'edu', 'or', 'ne', 'go']);

/**
 * The registrable domain of a host, approximately (no public suffix list):
 * the last two labels, or three under a two-letter country code with a
 * generic second level. IP addresses and single labels are kept whole.
 * @example siteOf('files.pythonhosted.org') // 'pythonhosted.org'
 * @example siteOf('www.bbc.co.uk') // 'bbc.co.uk'
 */
export function siteOf(host: string): string {
  if (/^[0-9.]+$/.test(host) || host.includes(':')) return host;
  const labels = host.split('.');
  if (labels.length <= 2) return host;
  const tld = labels[labels.length - 1]!;
  const second = labels[labels.length - 2]!;
  const n = tld.length === 2 && SECOND_LEVEL.has(second) ? 3 : 2;
  return labels.slice(-n).join('.');
}

/**
 * The public suffix of a host, approximately (the part under which names are
 * registered: `org`, `co.uk`); IP literals are `(ip)`. A first request under
 * a suffix the agent never used (`.xyz` for an agent that only reads `.org`
 * and `.edu` sites) is evidence even for an agent that often reaches new sites.
 * @example suffixOf('www.bbc.co.uk') // 'co.uk'
 */
export function suffixOf(host: string): string {
  if (/^[0-9.]+$/.test(host) || host.includes(':')) return '(ip)';
  const site = siteOf(host);
  const dot = site.indexOf('.');
  return dot < 0 ? site : site.slice(dot + 1);
}

/**
 * A command's program (basename of argv[0]) and program plus its first
 * argument, with a file-like argument reduced to its extension so that
 * `python a.py` and `python b.py` are the same behaviour.
 */
export function commandKey(argv: readonly string[]): { program: string; withArg: string } | undefined {
  const first = argv[0];
  if (first === undefined || first.length === 0) return undefined;
  const program = first.split('/').pop() || first;
  const arg = argv[1];
  if (arg === undefined) return { program, withArg: program };
  let shape = arg;
  if (arg.includes('/') || /\.[A-Za-z0-9]{1,8}$/.test(arg)) {
    const ext = /\.([A-Za-z0-9]{1,8})$/.exec(arg)?.[1];
    shape = ext ? `*.${ext}` : '<path>';
  } else if (arg.length > 40) shape = '<long>';
  return { program, withArg: `${program} ${shape}` };
}

/**
 * The area of a path key: its first component (`~`, `/workspace`, `/etc`).
 * A first access to a new area (a coding agent reading anything in a home
 * directory) is stronger evidence than a new key in a known area.
 */
export function areaOf(key: string): string {
  if (key.startsWith('~')) return '~';
  const m = /^\/[^/]*/.exec(key);
  return m ? m[0] : key;
}

/** Top-level directories whose second component names what is read (`/etc/shadow`). */
const SYSTEM_DIRS = new Set(['etc', 'proc', 'sys', 'dev', 'boot', 'var', 'run']);

/**
 * The key of a path for novelty: home directories become `~`, system
 * directories keep two components, the first hidden component (`.ssh`,
 * `.aws`, `.git`) is kept, and everything else is reduced to its top directory.
 * @example pathKey('/root/.ssh/id_rsa') // '~/.ssh'
 * @example pathKey('/workspace/app/src/main.py') // '/workspace'
 * @example pathKey('/etc/shadow') // '/etc/shadow'
 */
export function pathKey(path: string): string {
  const parts = path.split('/').filter((p) => p.length > 0 && p !== '.');
  if (path.startsWith('~')) parts.splice(0, 1, 'home', '~');
  let head: string;
  let rest: string[];
  if (parts[0] === 'root') { head = '~'; rest = parts.slice(1); }
  else if (parts[0] === 'home' && parts.length > 1) { head = '~'; rest = parts.slice(2); }
  else if (parts[0] !== undefined && SYSTEM_DIRS.has(parts[0])) { head = `/${parts.slice(0, 2).join('/')}`; rest = parts.slice(2); }
  else { head = parts[0] === undefined ? '/' : `/${parts[0]}`; rest = parts.slice(1); }
  const hidden = rest.findIndex((p) => p.startsWith('.') && p !== '..');
  if (hidden < 0) return head;
  return hidden === 0 ? `${head}/${rest[0]}` : `${head}/…/${rest[hidden]}`;
}
