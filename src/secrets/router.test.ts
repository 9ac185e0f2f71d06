/** The per-proxy router: each sandbox's requests go to its own secrets; unknown sandboxes pass unchanged; CONNECT names are scanned. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSecretsRouter, EXFILTRATION_REASON, type ExfiltrationFinding } from './index.js';
import { GH_VALUE, reviewerSecrets } from './testing.js';

test('requests are routed by sandbox id; after unregister they pass unchanged', () => {
  const router = createSecretsRouter();
  const a = reviewerSecrets();
  const b = reviewerSecrets();
  const seen: Array<[string, string]> = [];
  router.register('sb-a', a, { onExfiltration: (f) => seen.push(['a', f.secret]) });
  router.register('sb-b', b, { onExfiltration: (f) => seen.push(['b', f.secret]) });
  const phA = a.placeholderOf('gh')!;
  const headers = { authorization: `Bearer ${phA}` };
  const own = router.requestHook({ sandboxId: 'sb-a', host: 'api.github.com', port: 443, path: '/', headers });
  assert.equal(own.deny, undefined);
  assert.equal(headers.authorization, `Bearer ${GH_VALUE}`, 'sandbox a\'s placeholder is swapped in its own request');
  // Each sandbox's findings go to its own reporter.
  const leakB = router.requestHook({ sandboxId: 'sb-b', host: 'pypi.org', port: 443, path: `/?t=${b.placeholderOf('gh')!}`, headers: {} });
  const leakA = router.requestHook({ sandboxId: 'sb-a', host: 'pypi.org', port: 443, path: `/?t=${phA}`, headers: {} });
  assert.equal(leakB.deny?.reason, EXFILTRATION_REASON);
  assert.equal(leakA.deny?.reason, EXFILTRATION_REASON);
  assert.deepEqual(seen, [['b', 'gh'], ['a', 'gh']]);
  router.unregister('sb-a');
  assert.equal(router.size, 1);
  const after = { authorization: `Bearer ${phA}` };
  assert.deepEqual(router.requestHook({ sandboxId: 'sb-a', host: 'api.github.com', port: 443, path: '/', headers: after }), {});
  assert.equal(after.authorization, `Bearer ${phA}`, 'an ended sandbox gets no substitution');
});

test('the CONNECT hook refuses a host name carrying a placeholder or a value, and reports it', () => {
  const router = createSecretsRouter();
  const s = reviewerSecrets();
  const found: ExfiltrationFinding[] = [];
  router.register('sb-a', s, { onExfiltration: (f) => found.push(f) });
  const ph = s.placeholderOf('gh')!;
  const cases = [
    { name: 'placeholder as a subdomain', host: `${ph}.evil.example.net`, deny: true },
    { name: 'hex of the value as a subdomain', host: `${Buffer.from(GH_VALUE.slice(0, 30)).toString('hex')}.x.example.net`, deny: false },
    { name: 'a plain host', host: 'pypi.org', deny: false },
    { name: 'unknown sandbox', host: `${ph}.evil.example.net`, deny: false, sandboxId: 'sb-zz' },
  ];
  for (const c of cases) {
    const r = router.connectHook({ sandboxId: c.sandboxId ?? 'sb-a', host: c.host, port: 443 });
    assert.equal(r?.deny?.reason === EXFILTRATION_REASON, c.deny, c.name);
  }
  assert.deepEqual(found.map((f) => f.found && [f.kind, f.secret, f.where]), [['placeholder-wrong-host', 'gh', 'host']]);
});

test('scrubAudit withholds event fields that carry a real value, in any encoding, and leaves the rest', () => {
  const router = createSecretsRouter();
  router.register('sb-a', reviewerSecrets());
  const cases = [
    { name: 'raw value in the path', field: 'path', text: `/x?q=${GH_VALUE}`, withheld: true },
    { name: 'base64 in a problem text', field: 'problem', text: `does not allow GET http://h/${Buffer.from(GH_VALUE).toString('base64')}`, withheld: true },
    { name: 'percent-encoded in the path', field: 'path', text: `/x?q=${encodeURIComponent(GH_VALUE).replace(/[A-Za-z]/g, (c) => `%${c.charCodeAt(0).toString(16)}`)}`, withheld: true },
    { name: 'hex in the host', field: 'host', text: `${Buffer.from(GH_VALUE).toString('hex')}.example.net`, withheld: true },
    { name: 'an ordinary path', field: 'path', text: '/repos/o/r/pulls', withheld: false },
  ];
  for (const c of cases) {
    const data: Record<string, unknown> = { [c.field]: c.text, port: 443 };
    router.scrubAudit('sb-a', data);
    assert.equal(data[c.field] !== c.text, c.withheld, c.name);
    if (c.withheld) assert.equal(data[c.field], '[withheld: carries the value of the secret gh]', c.name);
  }
  const other: Record<string, unknown> = { path: `/x?q=${GH_VALUE}` };
  router.scrubAudit('sb-unknown', other);
  assert.equal(other.path, `/x?q=${GH_VALUE}`, 'a sandbox without secrets cannot know a value: nothing to scrub');
});
