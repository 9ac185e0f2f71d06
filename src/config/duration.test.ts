/** Table tests of duration strings. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidInputError } from '../errors/index.js';
import { formatDuration, parseDuration, tryParseDuration } from './index.js';

describe('parseDuration', () => {
  const good: [string, number][] = [
    ['500ms', 500],
    ['30s', 30_000],
    ['10m', 600_000],
    ['2h', 7_200_000],
    ['7d', 604_800_000],
    ['1h30m', 5_400_000],
    ['1d2h3m4s5ms', 93_784_005],
    ['0s', 0],
    [' 15m ', 900_000],
    ['365d', 31_536_000_000],
  ];
  for (const [text, ms] of good) {
    test(`"${text}" is ${ms} ms`, () => assert.equal(parseDuration(text), ms));
  }

  const bad: [string, RegExp, RegExp][] = [
    ['', /empty/, /unit/],
    ['30', /no unit/, /"30s".*"30m"/],
    ['1.5', /no unit/, /"1\.5s"/],
    ['30 minutes', /cannot read/, /"30s"/],
    ['1.5h', /cannot read "1\.5h"/, /"1h30m"/],
    ['-5s', /cannot read/, /unit/],
    ['5x', /cannot read "5x"/, /unit/],
    ['30m1h', /largest to smallest/, /"1h30m"/],
    ['1m1m', /largest to smallest/, /unit/],
    ['366d', /longer than one year/, /"365d"/],
  ];
  for (const [text, problem, fix] of bad) {
    test(`"${text}" is rejected`, () => {
      const r = tryParseDuration(text);
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.match(r.problem, problem);
      assert.match(r.fix, fix);
      assert.throws(() => parseDuration(text), (err: unknown) => err instanceof InvalidInputError && err.message.includes(r.problem));
    });
  }
});

describe('formatDuration', () => {
  const cases: [number, string][] = [[0, '0s'], [500, '500ms'], [90_000, '1m30s'], [86_400_000, '1d'], [93_784_005, '1d2h3m4s5ms']];
  for (const [ms, text] of cases) {
    test(`${ms} ms is "${text}" and parses back`, () => {
      assert.equal(formatDuration(ms), text);
      assert.equal(parseDuration(text), ms);
    });
  }
});
