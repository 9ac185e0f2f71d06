/**
 * SPIFFE ID tests: the trust domain rules of the SPIFFE specification, cordon's
 * agent and sandbox id formats, and strict parsing of anything else.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidInputError } from '../errors/index.js';
import { parseSpiffeId, spiffeId, validateTrustDomain } from './index.js';

const SB = 'sb-abcdefghijklmnopqrst';

test('a sandbox SPIFFE ID is spiffe://<trust-domain>/agent/<agent>/sandbox/<id> and parses back', () => {
  const id = spiffeId('agents.example.org', 'code-reviewer', SB);
  assert.equal(id, `spiffe://agents.example.org/agent/code-reviewer/sandbox/${SB}`);
  assert.deepEqual(parseSpiffeId(id), { trustDomain: 'agents.example.org', agent: 'code-reviewer', sandboxId: SB });
});

test('trust domains allowed by the SPIFFE specification', () => {
  for (const td of ['example.org', 'a', 'my_domain-1.internal', '0.0', 'x'.repeat(255)]) {
    assert.equal(validateTrustDomain(td), td, td);
  }
});

const badTrustDomains: Array<{ name: string; td: string; message: RegExp }> = [
  { name: 'empty', td: '', message: /is not a SPIFFE trust domain/ },
  { name: 'upper case (suggests lower case)', td: 'Example.org', message: /use "example.org"/ },
  { name: 'with a port', td: 'example.org:443', message: /not a SPIFFE trust domain/ },
  { name: 'with a scheme', td: 'spiffe://example.org', message: /not a SPIFFE trust domain/ },
  { name: 'with user info', td: 'user@example.org', message: /not a SPIFFE trust domain/ },
  { name: 'with a path', td: 'example.org/x', message: /not a SPIFFE trust domain/ },
  { name: 'with a space', td: 'example org', message: /not a SPIFFE trust domain/ },
  { name: 'percent-encoded', td: 'ex%41mple.org', message: /not a SPIFFE trust domain/ },
  { name: 'non-ASCII', td: 'exämple.org', message: /not a SPIFFE trust domain/ },
  { name: 'longer than 255 characters', td: 'x'.repeat(256), message: /not a SPIFFE trust domain/ },
];
for (const c of badTrustDomains) {
  test(`trust domain refused: ${c.name}`, () => {
    assert.throws(() => spiffeId(c.td, 'default', SB), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError, String(err));
      assert.match(err.message, c.message);
      assert.match(err.fix ?? '', /lowercase letters, digits/);
      return true;
    });
  });
}

const badParts: Array<{ name: string; agent: string; sandbox: string; message: RegExp }> = [
  { name: 'agent with upper case', agent: 'Reviewer', sandbox: SB, message: /not an agent name/ },
  { name: 'agent starting with a digit', agent: '1agent', sandbox: SB, message: /not an agent name/ },
  { name: 'agent with a slash', agent: 'a/../b', sandbox: SB, message: /not an agent name/ },
  { name: 'agent of 64 characters', agent: 'a'.repeat(64), sandbox: SB, message: /not an agent name/ },
  { name: 'empty agent', agent: '', sandbox: SB, message: /not an agent name/ },
  { name: 'sandbox id without prefix', agent: 'default', sandbox: 'abcdefghijklmnopqrst', message: /not a sandbox id/ },
  { name: 'sandbox id too short', agent: 'default', sandbox: 'sb-abc', message: /not a sandbox id/ },
  { name: 'sandbox id with non-base32 digit', agent: 'default', sandbox: 'sb-abcdefghijklmnopqr1', message: /not a sandbox id/ },
  { name: 'sandbox id in upper case', agent: 'default', sandbox: SB.toUpperCase(), message: /not a sandbox id/ },
  { name: 'sandbox id with a path', agent: 'default', sandbox: `${SB}/x`, message: /not a sandbox id/ },
];
for (const c of badParts) {
  test(`SPIFFE ID part refused: ${c.name}`, () => {
    assert.throws(() => spiffeId('example.org', c.agent, c.sandbox), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError, String(err));
      assert.match(err.message, c.message);
      return true;
    });
  });
}

const unparsable: Array<[string, string]> = [
  ['another scheme', `https://example.org/agent/a/sandbox/${SB}`],
  ['no path', 'spiffe://example.org'],
  ['another path shape', `spiffe://example.org/workload/a/sandbox/${SB}`],
  ['an extra segment', `spiffe://example.org/agent/a/sandbox/${SB}/x`],
  ['a trailing slash', `spiffe://example.org/agent/a/sandbox/${SB}/`],
  ['a query', `spiffe://example.org/agent/a/sandbox/${SB}?x=1`],
  ['a fragment', `spiffe://example.org/agent/a/sandbox/${SB}#x`],
  ['a port', `spiffe://example.org:8443/agent/a/sandbox/${SB}`],
  ['percent-encoding', `spiffe://example.org/agent/%61/sandbox/${SB}`],
  ['a dot segment', `spiffe://example.org/agent/../sandbox/${SB}`],
  ['upper-case trust domain', `spiffe://Example.org/agent/a/sandbox/${SB}`],
  ['a bad sandbox id', 'spiffe://example.org/agent/a/sandbox/sb-x'],
  ['an empty string', ''],
];
for (const [name, id] of unparsable) {
  test(`parseSpiffeId refuses ${name}`, () => {
    assert.equal(parseSpiffeId(id), undefined);
  });
}
