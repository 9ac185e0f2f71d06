/**
 * A small built-in list of public suffixes: names under which anyone can
 * register a domain (or, for the shared hosting suffixes, get a subdomain).
 * A wildcard directly over one of these (`*.com`, `*.co.uk`, `*.github.io`)
 * would let an agent reach hosts that an attacker can create, so the config
 * loader rejects it. The list is deliberately short: single-label suffixes are
 * rejected by rule anyway (`*.anything` with one label), so this list only needs
 * the multi-label ones; the single-label entries are kept for clearer messages.
 */

/** Common generic and country-code top-level domains. */
export const COMMON_TLDS: ReadonlySet<string> = new Set([
  'com', 'net', 'org', 'edu', 'gov', 'mil', 'int', 'info', 'biz', 'name', 'pro',
  'io', 'ai', 'co', 'dev', 'app', 'cloud', 'me', 'tv', 'xyz', 'site', 'online', 'tech',
  'us', 'uk', 'eu', 'de', 'fr', 'nl', 'be', 'ch', 'at', 'it', 'es', 'pt', 'se', 'no',
  'dk', 'fi', 'pl', 'cz', 'ie', 'ru', 'ua', 'cn', 'jp', 'kr', 'in', 'au', 'nz', 'ca',
  'br', 'mx', 'ar', 'za', 'sg', 'hk', 'tw', 'il', 'tr',
  'local', 'localhost', 'internal', 'lan', 'home', 'corp', 'test', 'example', 'invalid',
]);

/** Registry suffixes with more than one label (second-level registrations). */
export const MULTI_LABEL_SUFFIXES: ReadonlySet<string> = new Set([
  'co.uk', 'org.uk', 'ac.uk', 'gov.uk', 'ltd.uk', 'plc.uk', 'me.uk', 'net.uk',
  'com.au', 'net.au', 'org.au', 'edu.au', 'gov.au',
  'co.nz', 'org.nz', 'net.nz',
  'co.jp', 'ne.jp', 'or.jp', 'ac.jp',
  'co.kr', 'or.kr',
  'co.in', 'net.in', 'org.in',
  'co.za', 'org.za',
  'com.br', 'net.br', 'org.br',
  'com.cn', 'net.cn', 'org.cn',
  'com.mx', 'com.ar', 'com.tr', 'com.tw', 'com.hk', 'com.sg', 'co.il',
]);

/**
 * Suffixes where anyone can get a subdomain from a hosting provider, so a
 * wildcard over them is as broad as a wildcard over a TLD.
 */
export const SHARED_HOSTING_SUFFIXES: ReadonlySet<string> = new Set([
  'github.io', 'gitlab.io', 'pages.dev', 'workers.dev',
  'vercel.app', 'netlify.app', 'herokuapp.com', 'appspot.com', 'web.app', 'firebaseapp.com',
  'azurewebsites.net', 'cloudfront.net', 'amazonaws.com', 'blogspot.com',
  'ngrok.io', 'ngrok-free.app', 'trycloudflare.com', 'fly.dev', 'onrender.com', 'repl.co',
]);

/** Why `suffix` is too broad to put a wildcard over, or `undefined` if it is fine. */
export function publicSuffixKind(suffix: string): 'tld' | 'registry' | 'hosting' | undefined {
  if (!suffix.includes('.') || COMMON_TLDS.has(suffix)) return 'tld';
  if (MULTI_LABEL_SUFFIXES.has(suffix)) return 'registry';
  if (SHARED_HOSTING_SUFFIXES.has(suffix)) return 'hosting';
  return undefined;
}
