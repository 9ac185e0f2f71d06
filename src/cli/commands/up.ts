/**
 * `cordon up`: run the control plane (API, and the doors as they land) on the
 * embedded SQLite store until SIGINT/SIGTERM, with the dashboard at `/ui/`. The
 * operator token is printed once, on the start that creates it.
 */
import type { Command } from 'commander';
import { startControlPlane } from '../../controlplane/index.js';
import { InvalidInputError } from '../../errors/index.js';
import { cliContext, printJson } from '../context.js';

export function registerUp(program: Command): void {
  program
    .command('up')
    .description('run the control plane on this machine (stops on Ctrl-C)')
    .option('--port <port>', 'API port (default: server.port in cordon.yaml, 8787)')
    .option('--host <address>', 'API address (default: 127.0.0.1)')
    .option('--json', 'print one JSON line with the URL once started')
    .option('--exit-after <ms>', 'stop after this many milliseconds (for scripts and tests)')
    .action(async function upCommand(opts: { port?: string; host?: string; json?: boolean; exitAfter?: string }, cmd: Command) {
      const { home, config } = cliContext(cmd);
      const port = opts.port === undefined ? undefined : parsePort(opts.port);
      const cp = await startControlPlane({ home, config, ...(port !== undefined ? { port } : {}), ...(opts.host ? { host: opts.host } : {}) });
      if (opts.json) {
        printJson({ url: cp.url, dashboardUrl: cp.dashboardUrl ?? null, home, operatorTokenFile: cp.operatorToken.path, operatorTokenCreated: cp.operatorToken.created });
      } else {
        process.stdout.write(`cordon control plane listening on ${cp.url}\n`);
        if (cp.dashboardUrl) process.stdout.write(`  dashboard: ${cp.dashboardUrl} (sign in with the operator token)\n`);
        process.stdout.write(`  state:  ${home}\n  store:  ${cp.store.kind}\n`);
        if (cp.operatorToken.created) {
          process.stdout.write(
            `  operator token (shown once; also saved, mode 0600, in ${cp.operatorToken.path}):\n    ${cp.operatorToken.token}\n`,
          );
        } else {
          process.stdout.write(`  operator token: ${cp.operatorToken.path}\n`);
        }
        process.stdout.write('Press Ctrl-C to stop.\n');
      }
      await new Promise<void>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const stop = () => {
          if (timer) clearTimeout(timer);
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
        if (opts.exitAfter !== undefined) timer = setTimeout(stop, Math.max(0, Number(opts.exitAfter) || 0));
      });
      await cp.stop();
      if (!opts.json) process.stdout.write('cordon stopped; audit log sealed with a checkpoint.\n');
    });
}

function parsePort(s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new InvalidInputError(`--port ${JSON.stringify(s)} is not a port number`, { fix: 'use a number from 1 to 65535 (0 picks a free port)' });
  }
  return n;
}
