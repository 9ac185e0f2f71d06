/** Operator token files: created once with mode 0600, validated on read. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, statSync, writeFileSync } from 'node:fs';
import { loadOrCreateOperatorToken, operatorTokenChecker, readOperatorToken } from './index.js';
import { KeyError } from '../errors/index.js';
import { tempDir } from '../testkit/index.js';

test('the token is created once, 0600, and read back the same', () => {
  const d = tempDir();
  try {
    const a = loadOrCreateOperatorToken(d.path);
    assert.equal(a.created, true);
    assert.match(a.token, /^cop_[A-Za-z0-9_-]{43}$/);
    assert.equal(statSync(a.path).mode & 0o777, 0o600);
    const b = loadOrCreateOperatorToken(d.path);
    assert.equal(b.created, false);
    assert.equal(b.token, a.token);
  } finally {
    d.cleanup();
  }
});

const badFiles = [
  { name: 'group-readable file', content: 'cop_' + 'x'.repeat(43), mode: 0o640, code: 'key-permissions', fix: /chmod 600/ },
  { name: 'garbage content', content: 'hello', mode: 0o600, code: 'key-corrupt', fix: /move .* aside/ },
  { name: 'truncated token', content: 'cop_abc', mode: 0o600, code: 'key-corrupt', fix: /cordon up/ },
];
for (const c of badFiles) {
  test(`a bad token file is refused: ${c.name}`, () => {
    const d = tempDir();
    try {
      const p = loadOrCreateOperatorToken(d.path).path;
      writeFileSync(p, c.content);
      chmodSync(p, c.mode);
      assert.throws(() => readOperatorToken(d.path), (err: unknown) => {
        assert.ok(err instanceof KeyError);
        assert.equal(err.code, c.code);
        assert.ok(err.message.includes(p), 'names the file');
        assert.match(err.fix ?? '', c.fix);
        return true;
      });
    } finally {
      d.cleanup();
    }
  });
}

test('the checker accepts only the exact token', () => {
  const tok = 'cop_' + 'Q'.repeat(43);
  const ok = operatorTokenChecker(tok);
  assert.equal(ok(tok), true);
  for (const bad of [undefined, '', tok + 'x', tok.slice(0, -1), 'Q'.repeat(47), 'cop_' + 'q'.repeat(43), 'x'.repeat(10_000)]) {
    assert.equal(ok(bad), false, `refuses ${String(bad).slice(0, 20)}`);
  }
});
