/**
 * The multi-pattern scanner and scrubber decide exactly as a search pattern
 * by pattern does. The references below are that search, written out as the
 * layer did it before the matcher (one `Buffer.indexOf` per pattern, in
 * pattern order; bodies as windows of the held-back tail plus the new
 * chunk). Seeded random sandboxes (values with quotes, spaces, `%`, `+`, `*`
 * and high bytes, values inside other values, one value under two names,
 * placeholders bound to some hosts, a binding check that throws) and random
 * requests and responses (every encoding, partial percent-encoding,
 * prefixes that stop short, bodies cut into random chunks) must give the
 * same finding, the same forwarded bytes after every chunk, the same masked
 * bytes and the same counts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createExfiltrationScanner, percentDecode, valuePatterns, type ExfiltrationFinding, type ExfiltrationWhere, type ScanHead, type ScannerInput } from './index.js';
import { createReflectionScrubber, createReflectionScrubberOver, REFLECTION_MASK_BYTE, type ReflectedCount } from './reflect.js';
import { compileSecretPatterns } from './patterns.js';
import type { RequestTarget } from './bindings.js';
import type { SecretEncoding } from './encodings.js';
import { SecretValue } from './value.js';
import { seededRandom } from '../util/random.js';


// ---- the references: pattern-by-pattern search ------------------------------------------------

interface RefPattern { bytes: Buffer; secret: string; kind: 'secret-value' | 'placeholder-wrong-host'; encoding: SecretEncoding }

function refScanner(input: ScannerInput) {
  const valuePats: RefPattern[] = [];
  for (const [secret, value] of input.values) for (const p of valuePatterns(value.revealBytes())) valuePats.push({ ...p, secret, kind: 'secret-value' });
  const placeholderPats: RefPattern[] = [...input.placeholders].map(([ph, secret]) => ({ bytes: Buffer.from(ph, 'latin1'), secret, kind: 'placeholder-wrong-host', encoding: 'raw' }));
  const longest = Math.max(0, ...[...valuePats, ...placeholderPats].map((p) => p.bytes.length));
  const holdBackBytes = Math.max(0, 3 * longest - 1);
  const patternsFor = (target: RequestTarget): RefPattern[] => {
    const bound = (secret: string): boolean => {
      try {
        return input.isBound(secret, target) === true;
      } catch {
        return false;
      }
    };
    return [...valuePats, ...placeholderPats.filter((p) => !bound(p.secret))];
  };
  const search = (window: Buffer, patterns: RefPattern[], where: ExfiltrationWhere): ExfiltrationFinding => {
    for (const p of patterns) if (window.indexOf(p.bytes) >= 0) return { found: true, kind: p.kind, secret: p.secret, where, encoding: p.encoding };
    if (window.indexOf(0x25) < 0) return { found: false };
    const decoded = percentDecode(window);
    for (const p of patterns) {
      if (decoded.indexOf(p.bytes) >= 0) return { found: true, kind: p.kind, secret: p.secret, where, encoding: p.encoding === 'raw' || p.encoding === 'json' ? 'url' : p.encoding };
    }
    return { found: false };
  };
  return {
    holdBackBytes,
    scanHead(head: ScanHead): ExfiltrationFinding {
      const patterns = patternsFor(head);
      const check = (text: string, where: ExfiltrationWhere) => search(Buffer.from(text, 'latin1'), patterns, where);
      let f = check(String(head.host ?? ''), 'host');
      if (f.found) return f;
      let target = String(head.path ?? '');
      const absolute = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(target);
      if (absolute) {
        f = check(absolute[1]!, 'host');
        if (f.found) return f;
        target = target.slice(absolute[0].length);
      }
      const q = target.indexOf('?');
      f = check(q < 0 ? target : target.slice(0, q), 'path');
      if (f.found) return f;
      if (q >= 0) {
        f = check(target.slice(q + 1), 'query');
        if (f.found) return f;
      }
      for (const [name, raw] of Object.entries(head.headers ?? {})) {
        if (raw === undefined) continue;
        const where = `header:${name.toLowerCase()}` as const;
        f = check(name, where);
        if (f.found) return f;
        for (const value of Array.isArray(raw) ? raw : [raw]) {
          f = check(String(value), where);
          if (f.found) return f;
        }
      }
      return { found: false };
    },
    body(target: RequestTarget) {
      const patterns = patternsFor(target);
      let held = Buffer.alloc(0);
      let finding: ExfiltrationFinding = { found: false };
      return {
        push(chunk: Uint8Array) {
          if (finding.found) return { finding, forward: Buffer.alloc(0) };
          const window = Buffer.concat([held, chunk]);
          finding = search(window, patterns, 'body');
          if (finding.found) {
            held = Buffer.alloc(0);
            return { finding, forward: Buffer.alloc(0) };
          }
          const cut = Math.max(0, window.length - holdBackBytes);
          held = Buffer.from(window.subarray(cut));
          return { finding, forward: window.subarray(0, cut) };
        },
        end() {
          const forward = finding.found ? Buffer.alloc(0) : held;
          held = Buffer.alloc(0);
          return { finding, forward };
        },
      };
    },
  };
}

function refPercentDecodeMapped(input: Buffer): { decoded: Buffer; origin: number[] } {
  const out: number[] = [];
  const origin: number[] = [];
  const hex = (c: number): number => (c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x41 && c <= 0x46 ? c - 55 : c >= 0x61 && c <= 0x66 ? c - 87 : -1);
  for (let i = 0; i < input.length; i++) {
    origin.push(i);
    if (input[i] === 0x25 && i + 2 < input.length && hex(input[i + 1]!) >= 0 && hex(input[i + 2]!) >= 0) {
      out.push((hex(input[i + 1]!) << 4) | hex(input[i + 2]!));
      i += 2;
    } else out.push(input[i]!);
  }
  origin.push(input.length);
  return { decoded: Buffer.from(out), origin };
}

function refScrubber(values: ReadonlyMap<string, SecretValue>) {
  const patterns: Array<{ bytes: Buffer; secret: string; encoding: SecretEncoding }> = [];
  for (const [secret, value] of values) for (const p of valuePatterns(value.revealBytes())) patterns.push({ ...p, secret });
  patterns.sort((a, b) => b.bytes.length - a.bytes.length);
  const holdBackBytes = Math.max(0, 3 * Math.max(0, ...patterns.map((p) => p.bytes.length)) - 1);
  const tally = (found: Map<string, ReflectedCount>, secret: string, form: SecretEncoding): void => {
    const c = found.get(`${secret}\0${form}`);
    if (c) c.count += 1;
    else found.set(`${secret}\0${form}`, { secret, form, count: 1 });
  };
  const mask = (buf: Buffer, found: Map<string, ReflectedCount>): void => {
    for (const p of patterns) {
      for (let at = buf.indexOf(p.bytes); at >= 0; at = buf.indexOf(p.bytes, at + p.bytes.length)) {
        buf.fill(REFLECTION_MASK_BYTE, at, at + p.bytes.length);
        tally(found, p.secret, p.encoding);
      }
    }
    if (buf.indexOf(0x25) < 0) return;
    const { decoded, origin } = refPercentDecodeMapped(buf);
    if (decoded.length === buf.length) return;
    for (const p of patterns) {
      for (let at = decoded.indexOf(p.bytes); at >= 0; at = decoded.indexOf(p.bytes, at + p.bytes.length)) {
        decoded.fill(REFLECTION_MASK_BYTE, at, at + p.bytes.length);
        buf.fill(REFLECTION_MASK_BYTE, origin[at]!, origin[at + p.bytes.length]!);
        tally(found, p.secret, p.encoding === 'raw' || p.encoding === 'json' ? 'url' : p.encoding);
      }
    }
  };
  return {
    holdBackBytes,
    scrubText(text: string, found: Map<string, ReflectedCount>): string {
      if (patterns.length === 0) return text;
      const total = (): number => [...found.values()].reduce((n, c) => n + c.count, 0);
      const before = total();
      const buf = Buffer.from(text, 'latin1');
      mask(buf, found);
      return total() === before ? text : buf.toString('latin1');
    },
    body() {
      const found = new Map<string, ReflectedCount>();
      let held = Buffer.alloc(0);
      return {
        push(chunk: Uint8Array): Buffer {
          if (patterns.length === 0) return Buffer.from(chunk);
          const window = Buffer.concat([held, chunk]);
          mask(window, found);
          const cut = Math.max(0, window.length - holdBackBytes);
          held = Buffer.from(window.subarray(cut));
          return window.subarray(0, cut);
        },
        end(): Buffer {
          const tail = held;
          held = Buffer.alloc(0);
          return tail;
        },
        counts: () => [...found.values()].map((c) => ({ ...c })),
      };
    },
  };
}

// ---- random sandboxes and traffic -------------------------------------------------------------

const HOSTS = ['api.one.example', 'two.example', 'evil.example.net'];

interface Trial {
  values: Map<string, SecretValue>;
  placeholders: Map<string, string>;
  isBound: ScannerInput['isBound'];
  /** Texts that may carry a value or placeholder in some form, or a near miss. */
  piece(): string;
  r: () => number;
}

function makeTrial(seed: number): Trial {
  const r = seededRandom(seed);
  const int = (n: number): number => Math.floor(r() * n);
  const CHARS = 'abcXYZ019_-.~ "\\%+/*=';
  const randomValue = (): Buffer => {
    const n = 8 + int(40);
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = r() < 0.05 ? 0x80 + int(128) : CHARS.charCodeAt(int(r() < 0.5 ? 6 : CHARS.length));
    return out;
  };
  const values = new Map<string, SecretValue>();
  const names: string[] = [];
  const count = int(13);
  for (let i = 0; i < count; i++) {
    const name = `s${i}`;
    names.push(name);
    const earlier = [...values.values()];
    let bytes: Buffer;
    const roll = r();
    if (earlier.length > 0 && roll < 0.1) bytes = Buffer.from(earlier[int(earlier.length)]!.revealBytes()); // one value under two names
    else if (earlier.length > 0 && roll < 0.2) bytes = Buffer.concat([Buffer.from('x*'), earlier[int(earlier.length)]!.revealBytes()]); // a value inside another
    else if (earlier.length > 0 && roll < 0.25) bytes = Buffer.from(earlier[int(earlier.length)]!.revealBytes().subarray(0, 8 + int(8))); // a prefix of another
    else bytes = randomValue();
    if (bytes.length < 8) bytes = Buffer.concat([bytes, Buffer.from('padding!')]);
    values.set(name, new SecretValue(name, bytes));
  }
  const placeholders = new Map<string, string>();
  for (const name of names) {
    if (r() < 0.7) placeholders.set(r() < 0.5 ? `cordon-ph-${seed}x${name}${'q'.repeat(int(20))}` : `ph${int(100)}${name}`, name);
  }
  if (r() < 0.1) placeholders.set(`shared-${seed}`, names[0] ?? 'ghost');
  const throwsFor = r() < 0.1 ? names[int(names.length)] : undefined;
  const boundTable = new Map(names.flatMap((n) => HOSTS.map((h) => [`${n}@${h}`, r() < 0.4] as const)));
  const isBound = (secret: string, target: RequestTarget): boolean => {
    if (secret === throwsFor) throw new Error('binding check broke');
    return boundTable.get(`${secret}@${target.host}`) ?? false;
  };
  const pct = (s: string, every: boolean): string => [...Buffer.from(s, 'latin1')].map((b, i) => (every || i % 2 === 0 ? `%${b.toString(16).padStart(2, '0')}` : String.fromCharCode(b))).join('');
  const FILLER = ['', ' ', 'a', 'abc', '%', '%4', '%zz', '%41', 'Bearer ', 'x=1&y=2', '*', '+', '\u00e9'];
  const piece = (): string => {
    const texts = [...[...values.values()].map((v) => v.revealBytes().toString('latin1')), ...placeholders.keys()];
    if (texts.length === 0 || r() < 0.3) return FILLER[int(FILLER.length)]! + FILLER[int(FILLER.length)]!;
    const t = texts[int(texts.length)]!;
    const bytes = Buffer.from(t, 'latin1');
    const forms = [
      () => t,
      () => bytes.toString('hex'),
      () => bytes.toString('hex').toUpperCase(),
      () => Buffer.concat([Buffer.from('ab'.slice(0, int(3))), bytes, Buffer.from('!')]).toString('base64'),
      () => Buffer.concat([Buffer.from('ab'.slice(0, int(3))), bytes]).toString('base64url'),
      () => JSON.stringify(Buffer.from(t, 'latin1').toString('utf8')).slice(1, -1),
      () => t.replaceAll(' ', '+'),
      () => pct(t, true),
      () => pct(t, false),
      () => encodeURIComponent(bytes.toString('base64')),
      () => t.slice(0, Math.max(0, t.length - 1 - int(3))), // stops short
      () => bytes.toString('hex').slice(1), // misaligned hex
    ];
    return forms[int(forms.length)]!();
  };
  return { values, placeholders, isBound, piece, r };
}

describe('same decisions as a search pattern by pattern', () => {
  test('a mask that completes a shorter pattern holding the mask byte is followed, as pattern by pattern', () => {
    // `abcdefghij` is masked first (longer); its ten `*` then complete `******1!`, which was nowhere before.
    const values = new Map([['long', new SecretValue('long', Buffer.from('abcdefghij'))], ['stars', new SecretValue('stars', Buffer.from('******1!'))]]);
    const found = new Map<string, ReflectedCount>();
    assert.equal(createReflectionScrubber(values).scrubText('<abcdefghij1!>', found), '<************>');
    assert.deepEqual([...found.values()], [{ secret: 'long', form: 'raw', count: 1 }, { secret: 'stars', form: 'raw', count: 1 }]);
    const expect = new Map<string, ReflectedCount>();
    assert.equal(refScrubber(values).scrubText('<abcdefghij1!>', expect), '<************>');
    assert.deepEqual([...found.values()], [...expect.values()]);
  });

  test('20 secrets: a body cut in two at every position around a value, and in three around it', () => {
    const values = new Map(Array.from({ length: 20 }, (_, j) => [`t${j}`, new SecretValue(`t${j}`, Buffer.from(`tok_${j}_${'abcdefghij'.repeat(3)}${j * 7919}`))]));
    const placeholders = new Map([...values.keys()].map((name, j) => [`cordon-ph-${String(j).padStart(32, 'q')}`, name]));
    const input: ScannerInput = { values, placeholders, isBound: () => false };
    const scanner = createExfiltrationScanner(input);
    const ref = refScanner(input);
    const value = values.get('t13')!.revealBytes();
    for (const [form, text] of [['base64', value.toString('base64')], ['url', [...value].map((c) => `%${c.toString(16)}`).join('')], ['raw', value.toString()]] as const) {
      const body = Buffer.from(`{"pad":"${'x'.repeat(1500)}","v":"${text}","after":"${'y'.repeat(1500)}"}`);
      const start = body.indexOf(text);
      const cutsList: number[][] = [];
      for (let cut = start - 70; cut <= start + text.length + 70; cut++) cutsList.push([cut]);
      for (let a = start - 5; a <= start + text.length; a += 7) for (let b2 = a + 1; b2 <= start + text.length + 5; b2 += 11) cutsList.push([a, b2]);
      for (const cuts of cutsList) {
        const mine = scanner.body({ host: 'x.example' });
        const theirs = ref.body({ host: 'x.example' });
        const bounds = [0, ...cuts, body.length];
        let forwarded = 0;
        for (let k = 1; k < bounds.length; k++) {
          const r = mine.push(body.subarray(bounds[k - 1], bounds[k]));
          forwarded += r.forward.length;
          assert.deepEqual(r, theirs.push(body.subarray(bounds[k - 1], bounds[k])), `${form}, cuts ${cuts.join(',')}, chunk ${k}`);
        }
        const end = mine.end();
        assert.deepEqual(end, theirs.end());
        assert.equal(end.finding.found && end.finding.secret, 't13', `${form}, cuts ${cuts.join(',')}: found`);
        assert.ok(forwarded <= start, `${form}, cuts ${cuts.join(',')}: ${forwarded} bytes passed on, the value starts at ${start}`);
      }
    }
  });

  test('exfiltration scanner: heads and chunked bodies of random requests to random sandboxes', () => {
    let found = 0;
    let calls = 0;
    for (let seed = 1; seed <= 400; seed++) {
      const t = makeTrial(seed);
      const input: ScannerInput = { values: t.values, placeholders: t.placeholders, isBound: t.isBound };
      const scanner = createExfiltrationScanner(input);
      const ref = refScanner(input);
      assert.equal(scanner.holdBackBytes, ref.holdBackBytes, `seed ${seed}: hold-back`);
      const int = (n: number): number => Math.floor(t.r() * n);
      for (let k = 0; k < 6; k++) {
        const host = t.r() < 0.9 ? HOSTS[int(HOSTS.length)]! : `${t.piece()}.example`;
        const path = t.r() < 0.2 ? `http://${t.piece()}@h.example/${t.piece()}?${t.piece()}` : `/${t.piece()}${t.r() < 0.6 ? `?q=${t.piece()}` : ''}`;
        const headers: Record<string, string | string[]> = {};
        for (let h = int(4); h > 0; h--) headers[t.r() < 0.1 ? `X-${t.piece().replace(/[^A-Za-z0-9]/g, '')}` : `x-h${h}`] = t.r() < 0.2 ? [t.piece(), t.piece()] : `v ${t.piece()} w`;
        const head = { host, port: 443, path, headers };
        const expect = ref.scanHead(head);
        assert.deepEqual(scanner.scanHead(head), expect, `seed ${seed} request ${k}: head ${JSON.stringify(head)}`);
        calls++;
        if (expect.found) found++;

        const body = Buffer.from(Array.from({ length: 1 + int(8) }, () => (t.r() < 0.3 ? 'f'.repeat(int(700)) : t.piece())).join(t.r() < 0.5 ? '' : ','), 'latin1');
        const cuts = [0];
        const step = t.r() < 0.15 && body.length <= 1500 ? 1 : 1 + int(Math.max(1, body.length)); // byte by byte only for short bodies (time)
        for (let at = step; at < body.length; at += step) cuts.push(at);
        cuts.push(body.length);
        const mine = scanner.body({ host, port: 443 });
        const theirs = ref.body({ host, port: 443 });
        for (let c = 1; c < cuts.length; c++) {
          const chunk = body.subarray(cuts[c - 1], cuts[c]);
          assert.deepEqual(mine.push(chunk), theirs.push(chunk), `seed ${seed} request ${k}: body chunk ${c} of ${cuts.length - 1}`);
        }
        const end = theirs.end();
        assert.deepEqual(mine.end(), end, `seed ${seed} request ${k}: body end`);
        if (end.finding.found) found++;
        calls++;
      }
    }
    assert.ok(found > calls / 10, `enough findings to mean something: ${found} of ${calls}`);
  });

  test('reflection scrubber: random texts and chunked bodies, masked bytes and counts', () => {
    let masked = 0;
    let placeholderTexts = 0;
    let calls = 0;
    for (let seed = 1; seed <= 300; seed++) {
      const t = makeTrial(50_000 + seed);
      // Half the time over a compiled set that also holds placeholders, which the scrubber must ignore (patterns.ts).
      const shared = seed % 2 === 0;
      const scrubber = shared ? createReflectionScrubberOver(compileSecretPatterns(t.values, t.placeholders)) : createReflectionScrubber(t.values);
      const ref = refScrubber(t.values);
      assert.equal(scrubber.holdBackBytes, ref.holdBackBytes, `seed ${seed}: hold-back`);
      const int = (n: number): number => Math.floor(t.r() * n);
      for (let k = 0; k < 5; k++) {
        const text = Array.from({ length: 1 + int(5) }, () => t.piece()).join(t.r() < 0.5 ? '' : '*');
        if (shared && [...t.placeholders.keys()].some((ph) => text.includes(ph))) placeholderTexts++;
        const a = new Map<string, ReflectedCount>();
        const b = new Map<string, ReflectedCount>();
        const out = scrubber.scrubText(text, a);
        assert.equal(out, ref.scrubText(text, b), `seed ${seed} text ${k}: ${JSON.stringify(text)}`);
        assert.deepEqual([...a.values()], [...b.values()], `seed ${seed} text ${k}: counts`);
        calls++;
        if (out !== text) masked++;

        const body = Buffer.from(Array.from({ length: 1 + int(8) }, () => (t.r() < 0.3 ? 'g'.repeat(int(900)) : t.piece())).join(''), 'latin1');
        const step = t.r() < 0.15 && body.length <= 1500 ? 1 : 1 + int(body.length + 1);
        const mine = scrubber.body();
        const theirs = ref.body();
        for (let at = 0; at < body.length; at += step) {
          const chunk = body.subarray(at, at + step);
          assert.deepEqual(mine.push(chunk), theirs.push(chunk), `seed ${seed} body ${k}: chunk at ${at}`);
        }
        assert.deepEqual(mine.end(), theirs.end(), `seed ${seed} body ${k}: end`);
        assert.deepEqual(mine.counts(), theirs.counts(), `seed ${seed} body ${k}: counts`);
        calls++;
      }
    }
    assert.ok(masked > calls / 10, `enough masking to mean something: ${masked} of ${calls}`);
    assert.ok(placeholderTexts > 50, `texts carrying a placeholder the shared matcher reports: ${placeholderTexts}`);
  });
});
