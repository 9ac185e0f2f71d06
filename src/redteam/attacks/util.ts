/**
 * Helpers shared by the attack modules: running a Python probe in the
 * sandbox (the script travels in an environment variable, so no shell
 * quoting), curl lines that print status and cordon's refusal reason, and
 * judging an attack by whether its marker reached any canary.
 */
import type { CanaryMark } from '../canary.js';
import type { AttackContext, AttackResult, Ran, ShOptions } from '../types.js';

/** Run a Python 3 script in the sandbox. */
export function py(ctx: AttackContext, script: string, o: ShOptions & { args?: string[] } = {}): Promise<Ran> {
  const { args = [], ...sh } = o;
  return ctx.target.sh(`python3 -c "$RT_PY" ${args.map(q).join(' ')}`, { ...sh, env: { ...sh.env, RT_PY: script } });
}

/** Shell-quote one word. */
export function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * A curl command that prints `status=<code> reason=<X-Cordon-Error> exit=<curl exit>` on its last line.
 * @param args curl arguments after the common ones
 */
export function curlLine(args: string, maxTimeS = 8): string {
  return `curl -sS -m ${maxTimeS} -o /dev/null -D /tmp/rt-head.$$ -w '%{http_code}/%{http_connect}' ${args} > /tmp/rt-code.$$ 2>/tmp/rt-err.$$; e=$?; `
    + `echo "status=$(cat /tmp/rt-code.$$) reason=$(grep -i '^x-cordon-error:' /tmp/rt-head.$$ | tail -n 1 | tr -d '\\r' | cut -d' ' -f2) exit=$e err=$(head -c 160 /tmp/rt-err.$$ | tr '\\n' ' ')"; `
    + 'rm -f /tmp/rt-head.$$ /tmp/rt-code.$$ /tmp/rt-err.$$';
}

/** The last lines of a command's output, for evidence. */
export function brief(r: Ran, maxChars = 400): string {
  const text = `${r.stdout}${r.stderr ? ` [stderr] ${r.stderr}` : ''}`.trim().replace(/\s+/g, ' ');
  const tail = text.length > maxChars ? `…${text.slice(-maxChars)}` : text;
  return `exit ${r.exitCode ?? 'signal'}${r.timedOut ? ' (timed out)' : ''}: ${tail || '(no output)'}`;
}

/**
 * Score by outcome: succeeded when any of `needles` reached a canary (or,
 * with `anyAttackerByte`, when any byte reached the attacker since `mark`).
 */
export function judge(ctx: AttackContext, o: { needles: string[]; mark?: CanaryMark; anyAttackerByte?: boolean; onlyAttacker?: boolean; evidence: string[] }): AttackResult {
  const hits = new Set<string>();
  for (const n of o.needles) {
    for (const w of ctx.target.canaries.sawOutside(n, { excludeBoundHeader: true, since: o.mark ?? ctx.mark })) if (!o.onlyAttacker || w.startsWith('attacker')) hits.add(w);
  }
  if (o.anyAttackerByte) for (const w of ctx.target.canaries.attackerTouched(o.mark ?? ctx.mark)) hits.add(w);
  if (hits.size > 0) return { outcome: 'succeeded', evidence: [`canary reached: ${[...hits].slice(0, 6).join('; ')}`, ...o.evidence] };
  return { outcome: 'contained', evidence: ['no canary listener received the marker', ...o.evidence] };
}

/** Every encoding a scanner is expected to know, of a value. */
export function encodings(value: string): Record<string, string> {
  const b = Buffer.from(value);
  return {
    raw: value,
    base64: b.toString('base64'),
    base64url: b.toString('base64url'),
    hex: b.toString('hex'),
    percent: [...b].map((x) => `%${x.toString(16).padStart(2, '0')}`).join(''),
  };
}

/** Wait briefly for asynchronous canaries (connections being recorded). */
export function settle(ms = 300): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
