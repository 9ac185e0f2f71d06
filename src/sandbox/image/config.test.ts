/**
 * `agents.<name>.image` in cordon.yaml: package names and copy paths are
 * checked when the file is loaded, each problem named with its path and fix.
 * (Whether `copy.from` exists is checked when the image is planned, against
 * the directory of cordon.yaml: see agent-image.test.ts.)
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../errors/index.js';
import { parseConfig } from '../../config/index.js';

function withImage(image: string): string {
  return `version: 1\nagents:\n  coder:\n    image:\n${image.split('\n').map((l) => `      ${l}`).join('\n')}\n`;
}

describe('agents.<name>.image', () => {
  test('a valid image: packages and copies as written, defaults empty', () => {
    const c = parseConfig(withImage('packages: [nodejs, python3-venv, g++, libc6.1-dev]\ncopy:\n  - { from: ./app, to: /opt/app }\n  - { from: tools/bin, to: /opt/tools }'));
    assert.deepEqual(c.agents.coder!.image, {
      packages: ['nodejs', 'python3-venv', 'g++', 'libc6.1-dev'],
      copy: [{ from: './app', to: '/opt/app' }, { from: 'tools/bin', to: '/opt/tools' }],
    });
    assert.deepEqual(parseConfig(withImage('packages: []')).agents.coder!.image, { packages: [], copy: [] });
    assert.equal(parseConfig('version: 1\nagents:\n  plain: {}\n').agents.plain!.image, undefined, 'no image: the base image');
  });

  const bad: Array<{ name: string; image: string; path: string; problem: RegExp }> = [
    { name: 'upper-case package name', image: 'packages: [NodeJS]', path: 'agents.coder.image.packages[0]', problem: /"NodeJS" is not a valid Debian package name/ },
    { name: 'package name with a space (two names in one)', image: 'packages: ["nodejs git"]', path: 'agents.coder.image.packages[0]', problem: /not a valid Debian package name/ },
    { name: 'package name that looks like an option', image: 'packages: ["-y"]', path: 'agents.coder.image.packages[0]', problem: /not a valid Debian package name/ },
    { name: 'package with a version pin', image: 'packages: ["nodejs=18"]', path: 'agents.coder.image.packages[0]', problem: /not a valid Debian package name/ },
    { name: 'one-letter package', image: 'packages: [a]', path: 'agents.coder.image.packages[0]', problem: /not a valid Debian package name/ },
    { name: 'package listed twice', image: 'packages: [git, git]', path: 'agents.coder.image.packages[1]', problem: /listed twice/ },
    { name: 'absolute from', image: 'copy: [{ from: /etc, to: /opt/x }]', path: 'agents.coder.image.copy[0].from', problem: /not a directory relative to cordon.yaml/ },
    { name: 'from that climbs out', image: 'copy: [{ from: app/../../secrets, to: /opt/x }]', path: 'agents.coder.image.copy[0].from', problem: /leaves the directory of cordon.yaml/ },
    { name: 'empty from', image: 'copy: [{ from: "", to: /opt/x }]', path: 'agents.coder.image.copy[0].from', problem: /not a directory relative/ },
    { name: 'relative to', image: 'copy: [{ from: app, to: home/agent }]', path: 'agents.coder.image.copy[0].to', problem: /not a normalised absolute guest path/ },
    { name: 'to with ..', image: 'copy: [{ from: app, to: /opt/../etc }]', path: 'agents.coder.image.copy[0].to', problem: /not a normalised absolute guest path/ },
    { name: 'to the root', image: 'copy: [{ from: app, to: / }]', path: 'agents.coder.image.copy[0].to', problem: /not a normalised absolute guest path/ },
    { name: 'to over the guest agent', image: 'copy: [{ from: app, to: /usr/sbin/cordon-agent }]', path: 'agents.coder.image.copy[0].to', problem: /overlaps \/usr\/sbin\/cordon-agent/ },
    { name: 'to into the agent home (an empty tmpfs in the process back ends)', image: 'copy: [{ from: app, to: /home/agent/app }]', path: 'agents.coder.image.copy[0].to', problem: /overlaps \/home\/agent/ },
    { name: 'to into /tmp (replaced in every sandbox)', image: 'copy: [{ from: app, to: /tmp/app }]', path: 'agents.coder.image.copy[0].to', problem: /overlaps \/tmp/ },
    { name: 'to /usr/sbin (would hold the guest agent)', image: 'copy: [{ from: app, to: /usr/sbin }]', path: 'agents.coder.image.copy[0].to', problem: /overlaps \/usr\/sbin\/cordon-agent/ },
    { name: 'two copies to nested paths', image: 'copy:\n  - { from: a, to: /opt/app }\n  - { from: b, to: /opt/app/sub }', path: 'agents.coder.image.copy[1].to', problem: /overlap/ },
    { name: 'unknown key', image: 'packages: [git]\nfiles: [x]', path: 'agents.coder.image.files', problem: /unknown key "files"/ },
  ];
  for (const c of bad) {
    test(`refused: ${c.name}`, () => {
      assert.throws(() => parseConfig(withImage(c.image)), (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        const issue = err.issues.find((i) => i.path === c.path);
        assert.ok(issue, `no issue at ${c.path}: ${JSON.stringify(err.issues)}`);
        assert.match(issue.problem, c.problem);
        assert.ok(issue.fix.length > 0);
        return true;
      });
    });
  }
});
