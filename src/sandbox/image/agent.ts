/**
 * The guest agent is part of every image: before an image is planned, the
 * static binaries are (re)built from `guest/agent/` with make, so an image can
 * never be built from stale binaries or without the agent.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { EnvironmentError } from '../../errors/index.js';

/**
 * Run `make -C guest/agent` (a no-op when the binaries are up to date) and check
 * that both binaries exist in `agentDir`.
 * @param agentDir where the Makefile puts the binaries (`guest/build`)
 */
export function ensureGuestAgentBuilt(agentDir: string): void {
  const sourceDir = resolve(agentDir, '..', 'agent');
  if (!existsSync(join(sourceDir, 'Makefile'))) {
    throw new EnvironmentError('env-guest-agent-missing', `the guest agent sources are missing (${sourceDir})`, {
      fix: 'reinstall cordon: the package must include guest/agent',
    });
  }
  try {
    execFileSync('make', ['-s', '-C', sourceDir], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    const detail = e.code === 'ENOENT' ? 'make is not installed' : (e.stderr?.toString('utf8').trim().split('\n').slice(-5).join('\n') || e.message);
    throw new EnvironmentError('env-guest-agent-build-failed', `could not build the guest agent: ${detail}`, {
      fix: 'apt-get install -y make musl-tools, then run cordon image build again',
      cause: err,
    });
  }
  for (const name of ['cordon-init', 'cordon-agent']) {
    if (!existsSync(join(agentDir, name))) {
      throw new EnvironmentError('env-guest-agent-missing', `the guest agent build did not produce ${join(agentDir, name)}`, {
        fix: `run make -C ${sourceDir} and read its errors`,
      });
    }
  }
}
