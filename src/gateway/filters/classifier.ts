/**
 * An external prompt-injection classifier reached over HTTP. The gateway POSTs
 * `{"segments": [{"kind": "tool-result", "text": "…"}]}` and expects
 * `{"scores": [0.02, 0.97]}`, one score in 0..1 per segment. Anything else (a
 * timeout, a refused connection, a non-2xx status, a malformed or oversized
 * answer, the wrong number of scores) throws, and the gateway refuses the
 * request: the classifier fails closed.
 */
import { request } from 'undici';
import { z } from 'zod';
import type { InjectionDetector, InjectionFinding } from './injection.js';

export interface ClassifierOptions {
  url: string;
  /** Longest wait for an answer. @default 2000 */
  timeoutMs?: number;
  /** Extra request headers (e.g. an authorization header for the classifier). @default {} */
  headers?: Record<string, string>;
}

/** Largest classifier answer read, in bytes. */
const MAX_ANSWER_BYTES = 1024 * 1024;

const answerSchema = z.object({ scores: z.array(z.number().min(0).max(1)) }).passthrough();

export class ClassifierError extends Error {
  override name = 'ClassifierError';
}

/** A detector backed by the classifier at `url`. */
export function createClassifierDetector(options: ClassifierOptions): InjectionDetector {
  const timeoutMs = options.timeoutMs ?? 2_000;
  return {
    name: 'classifier',
    detect: async function detectWithClassifier(segments, signal): Promise<InjectionFinding[]> {
      const timeout = AbortSignal.timeout(timeoutMs);
      const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
      let text: string;
      try {
        const res = await request(options.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...options.headers },
          body: JSON.stringify({ segments }),
          signal: combined,
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
        });
        text = await readCapped(res.body);
        if (res.statusCode < 200 || res.statusCode > 299) {
          throw new ClassifierError(`the classifier answered HTTP ${res.statusCode}`);
        }
      } catch (err) {
        if (err instanceof ClassifierError) throw err;
        const why = timeout.aborted ? `no answer within ${timeoutMs} ms` : (err as Error).message;
        throw new ClassifierError(`the classifier at ${options.url} failed: ${why}`, { cause: err });
      }
      let parsed: z.infer<typeof answerSchema>;
      try {
        parsed = answerSchema.parse(JSON.parse(text));
      } catch (err) {
        throw new ClassifierError('the classifier answer is not {"scores": [numbers in 0..1]}', { cause: err });
      }
      if (parsed.scores.length !== segments.length) {
        throw new ClassifierError(`the classifier returned ${parsed.scores.length} scores for ${segments.length} segments`);
      }
      return parsed.scores.map((score) => ({ score, rules: ['classifier'] }));
    },
  };
}

async function readCapped(body: AsyncIterable<Buffer> & { destroy(): unknown }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > MAX_ANSWER_BYTES) {
      body.destroy();
      throw new ClassifierError(`the classifier answer is larger than ${MAX_ANSWER_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size).toString('utf8');
}
