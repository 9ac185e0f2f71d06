/** Tests of secret references in config strings, and of did-you-mean suggestions. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { renderTemplate, scanTemplate } from './index.js';
import { closest } from './errors/suggest.js';

describe('scanTemplate', () => {
  const cases: { name: string; text: string; secrets: string[]; malformed: string[] }[] = [
    { name: 'no template', text: 'plain', secrets: [], malformed: [] },
    { name: 'one reference', text: 'Bearer {{secret.github_token}}', secrets: ['github_token'], malformed: [] },
    { name: 'spaces inside the braces', text: '{{ secret.a }}', secrets: ['a'], malformed: [] },
    { name: 'two references, one repeated', text: '{{secret.a}}:{{secret.b}}:{{secret.a}}', secrets: ['a', 'b'], malformed: [] },
    { name: 'wrong prefix', text: '{{ secrets.a }}', secrets: [], malformed: ['{{ secrets.a }}'] },
    { name: 'empty name', text: '{{secret.}}', secrets: [], malformed: ['{{secret.}}'] },
    { name: 'other template language', text: '{{ env.HOME }}', secrets: [], malformed: ['{{ env.HOME }}'] },
    { name: 'unclosed', text: 'x {{secret.a', secrets: [], malformed: ['{{secret.a'] },
  ];
  for (const c of cases) {
    test(c.name, () => assert.deepEqual(scanTemplate(c.text), { secrets: c.secrets, malformed: c.malformed }));
  }
});

test('renderTemplate replaces every reference and nothing else', () => {
  const out = renderTemplate('Bearer {{secret.a}} / {{ secret.b }} / {{secret.a}}', (name) => `<${name}>`);
  assert.equal(out, 'Bearer <a> / <b> / <a>');
});

describe('closest', () => {
  const cases: { input: string; candidates: string[]; want: string | undefined }[] = [
    { input: 'egres', candidates: ['egress', 'env', 'tools'], want: 'egress' },
    { input: 'Egress', candidates: ['egress', 'env'], want: 'egress' },
    { input: 'resoruces', candidates: ['resources', 'isolation'], want: 'resources' },
    { input: 'agent', candidates: ['agents', 'audit'], want: 'agents' },
    { input: 'zzz', candidates: ['egress', 'env'], want: undefined },
    { input: 'storage', candidates: ['store', 'server'], want: 'store' },
    { input: 'database', candidates: ['store', 'server'], want: undefined },
    { input: 'x', candidates: [], want: undefined },
  ];
  for (const c of cases) {
    test(`${c.input} → ${String(c.want)}`, () => assert.equal(closest(c.input, c.candidates), c.want));
  }
});
