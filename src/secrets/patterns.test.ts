/**
 * A sandbox builds each of its two pattern sets' matchers once (patterns.ts):
 * its exfiltration scanner asks the one over values and placeholders,
 * `valueIn` and the reflection scrubber share the one over values; and they
 * decide exactly as when each built its own (before: three matchers).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMultiPatternMatcher, type MultiPatternMatcher } from './matcher.js';
import { valuePatterns } from './encodings.js';
import { createSandboxSecrets, type SandboxSecrets } from './placeholders.js';
import { compileSecretPatterns } from './patterns.js';
import { createReflectionScrubber, createReflectionScrubberOver, type ReflectedCount } from './reflect.js';
import { createExfiltrationScanner, createExfiltrationScannerOver } from './scan.js';
import { SecretValue } from './value.js';
import { API_VALUE, GH_VALUE, PROVIDER_VALUE, reviewerAgent } from './testing.js';

const VALUES = new Map([['gh', new SecretValue('gh', Buffer.from(GH_VALUE))], ['api', new SecretValue('api', Buffer.from(API_VALUE))]]);
const ALSO_BLOCK = new Map([['openai_key', new SecretValue('openai_key', Buffer.from(PROVIDER_VALUE))]]);

/** A sandbox whose matcher factory is watched: each matcher built, and the calls to each. */
function watchedSandbox(): { secrets: SandboxSecrets; built: Array<{ patterns: number; calls: number }>; calls(): number } {
  const built: Array<{ patterns: number; calls: number }> = [];
  const createMatcher = (patterns: readonly Uint8Array[]): MultiPatternMatcher => {
    const m = createMultiPatternMatcher(patterns);
    const seen = { patterns: patterns.length, calls: 0 };
    built.push(seen);
    return Object.assign(Object.create(m) as MultiPatternMatcher, {
      occurring(input: Uint8Array): number[] {
        seen.calls += 1;
        return m.occurring(input);
      },
    });
  };
  const secrets = createSandboxSecrets({ agentName: 'reviewer', agent: reviewerAgent(), values: VALUES, alsoBlock: ALSO_BLOCK, createMatcher });
  return { secrets, built, calls: () => built.reduce((n, b) => n + b.calls, 0) };
}

test('a sandbox builds one matcher per pattern set: values and placeholders for its scanner, values for valueIn and its scrubber', () => {
  const { secrets, built } = watchedSandbox();
  const valuePatternCount = [GH_VALUE, API_VALUE, PROVIDER_VALUE].reduce((n, v) => n + valuePatterns(Buffer.from(v)).length, 0);
  assert.deepEqual(built.map((b) => b.patterns), [valuePatternCount + 2, valuePatternCount], 'two matchers: values and the 2 placeholders; values');
  const scannerSet = built[0]!;
  const valueSet = built[1]!;
  const asked = (run: () => void): [number, number] => {
    const before = [scannerSet.calls, valueSet.calls];
    run();
    return [scannerSet.calls - before[0]!, valueSet.calls - before[1]!];
  };

  const [scanner, valueSetByScan] = asked(() => {
    const f = secrets.scan({ host: 'evil.example.net', port: 443, headers: { 'x-leak': Buffer.from(GH_VALUE).toString('base64') } });
    assert.deepEqual(f, { found: true, kind: 'secret-value', secret: 'gh', where: 'header:x-leak', encoding: 'base64' });
  });
  assert.ok(scanner > 0, 'the scanner asked the matcher over values and placeholders');
  assert.equal(valueSetByScan, 0, 'and not the one over values');

  const [scannerSetByValueIn, valueIn] = asked(() => {
    assert.equal(secrets.valueIn(`x ${PROVIDER_VALUE} y`), 'openai_key');
    assert.equal(secrets.valueIn(`x ${secrets.placeholderOf('gh')} y`), undefined, 'valueIn looks for values only');
  });
  assert.ok(valueIn > 0, 'valueIn asked the matcher over values');
  assert.equal(scannerSetByValueIn, 0, "valueIn did not ask the scanner's matcher");

  const [scannerSetByScrubber, scrubber] = asked(() => {
    const found = new Map<string, ReflectedCount>();
    const echoed = `{"got":"${API_VALUE}","ph":"${secrets.placeholderOf('api')}"}`;
    assert.equal(secrets.reflection!.scrubText(echoed, found), echoed.replace(API_VALUE, '*'.repeat(API_VALUE.length)), 'the value is masked, the placeholder is not');
    assert.deepEqual([...found.values()], [{ secret: 'api', form: 'raw', count: 1 }]);
    const body = secrets.reflection!.body();
    body.push(Buffer.from(`x${GH_VALUE}`));
    assert.deepEqual(body.counts(), [{ secret: 'gh', form: 'raw', count: 1 }]);
  });
  assert.ok(scrubber > 0, 'the scrubber asked the matcher over values, the one valueIn asks');
  assert.equal(scannerSetByScrubber, 0, "the scrubber did not ask the scanner's matcher");

  assert.equal(built.length, 2, 'no matcher built on use');
});

test('sharing changes no decision: the sandbox decides as a scanner, values-only scanner and scrubber each built alone', () => {
  const { secrets } = watchedSandbox();
  const values = new Map([...ALSO_BLOCK, ...VALUES]);
  const placeholders = new Map([...secrets.placeholders].map(([ph, info]) => [ph, info.secret]));
  const alone = createExfiltrationScanner({ values, placeholders, isBound: (s, t) => secrets.isBound(s, t) });
  const valuesAlone = createExfiltrationScanner({ values, placeholders: new Map(), isBound: () => false });
  const scrubberAlone = createReflectionScrubber(values);
  assert.equal(secrets.scanner.holdBackBytes, alone.holdBackBytes);
  assert.equal(secrets.reflection!.holdBackBytes, scrubberAlone.holdBackBytes, 'the scrubber holds back for values, not placeholders');

  const gh = secrets.placeholderOf('gh')!;
  const api = secrets.placeholderOf('api')!;
  const pct = (s: string): string => [...Buffer.from(s)].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
  const texts = [
    '', 'plain text', gh, api, `Bearer ${gh}`, `${api}|${gh}`, GH_VALUE, API_VALUE, PROVIDER_VALUE,
    Buffer.from(GH_VALUE).toString('hex').toUpperCase(), Buffer.from(`u:${API_VALUE}`).toString('base64'),
    Buffer.from(PROVIDER_VALUE).toString('base64url'), pct(GH_VALUE), pct(gh), JSON.stringify(API_VALUE), API_VALUE.replaceAll(' ', '+'),
    `${gh}${GH_VALUE}${api}`, GH_VALUE.slice(0, -1), `****${PROVIDER_VALUE}****${gh}`,
  ];
  for (const host of ['api.github.com', 'uploads.github.com', 'files.example.com', 'evil.example.net']) {
    for (const text of texts) {
      const head = { host, port: 443, path: `/p?q=${encodeURIComponent(text)}`, headers: { 'x-h': text } };
      assert.deepEqual(secrets.scanner.scanHead(head), alone.scanHead(head), `${host}: head ${JSON.stringify(text)}`);
      const body = Buffer.from(`{"a":"${text}","b":"${text}"}`);
      const mine = secrets.scanner.body(head);
      const theirs = alone.body(head);
      for (let at = 0; at < body.length; at += 7) assert.deepEqual(mine.push(body.subarray(at, at + 7)), theirs.push(body.subarray(at, at + 7)), `${host}: body ${JSON.stringify(text)} at ${at}`);
      assert.deepEqual(mine.end(), theirs.end());
    }
  }
  for (const text of texts) {
    const f = valuesAlone.scanHead({ host: text, port: 0 });
    assert.equal(secrets.valueIn(text), f.found ? f.secret : undefined, `valueIn ${JSON.stringify(text)}`);
    const a = new Map<string, ReflectedCount>();
    const b = new Map<string, ReflectedCount>();
    assert.equal(secrets.reflection!.scrubText(text, a), scrubberAlone.scrubText(text, b), `scrubText ${JSON.stringify(text)}`);
    assert.deepEqual([...a.values()], [...b.values()]);
    const body = Buffer.from(`${text}|${text}`, 'latin1');
    const mine = secrets.reflection!.body();
    const theirs = scrubberAlone.body();
    for (let at = 0; at < body.length; at += 5) assert.deepEqual(mine.push(body.subarray(at, at + 5)), theirs.push(body.subarray(at, at + 5)));
    assert.deepEqual(mine.end(), theirs.end());
    assert.deepEqual(mine.counts(), theirs.counts());
  }
});

test('over one set with a placeholder longer than every value pattern: the scrubber holds back for the values, the scanner for both', () => {
  const value = 'tok_abcdefgh';
  const values = new Map([['short', new SecretValue('short', Buffer.from(value))]]);
  const placeholder = `cordon-ph-${'q'.repeat(200)}`;
  const longestValue = Math.max(...valuePatterns(Buffer.from(value)).map((p) => p.bytes.length));
  assert.ok(placeholder.length > longestValue, 'the placeholder is the longest pattern of the set');
  const compiled = compileSecretPatterns(values, new Map([[placeholder, 'short']]));
  assert.equal(compiled.matcher.longestBytes, placeholder.length);

  const scrubber = createReflectionScrubberOver(compiled);
  assert.equal(scrubber.holdBackBytes, 3 * longestValue - 1, 'values only');
  assert.equal(scrubber.holdBackBytes, createReflectionScrubber(values).holdBackBytes);
  assert.equal(createExfiltrationScannerOver(compiled, () => false).holdBackBytes, 3 * placeholder.length - 1, 'values and placeholders');

  const text = `a ${placeholder} ${value} b`;
  const found = new Map<string, ReflectedCount>();
  assert.equal(scrubber.scrubText(text, found), `a ${placeholder} ${'*'.repeat(value.length)} b`, 'the value is masked, the placeholder is not');
  assert.deepEqual([...found.values()], [{ secret: 'short', form: 'raw', count: 1 }]);
  const body = scrubber.body();
  const passed = body.push(Buffer.from(text));
  assert.equal(body.heldBytes, 3 * longestValue - 1, 'a body holds back no more than the values need');
  assert.equal(Buffer.concat([passed, body.end()]).toString('latin1'), `a ${placeholder} ${'*'.repeat(value.length)} b`);
});
