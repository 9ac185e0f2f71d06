/**
 * Sandbox routes of the control-plane API, mounted at `/v1/sandboxes` behind
 * the operator-token and audit middleware of `app.ts`.
 *
 * Every input is checked with zod before the manager sees it; a bad one is a
 * 400 naming the field. Commands stream as NDJSON: `{"stdout": base64}` and
 * `{"stderr": base64}` lines as output arrives, then one `{"result": …}` line,
 * or one `{"error": {error, message, fix}}` line if the run fails after the
 * stream began. Files move as raw bytes, size-limited (413 past the limit).
 * The manager writes the audit events of each start, command and file access.
 */
import { Hono, type Context } from 'hono';
import { z } from 'zod';
import { AGENT_NAME } from '../config/index.js';
import { CordonError, InvalidInputError, LimitError, NotFoundError } from '../errors/index.js';
import type { Caller, SandboxInfo, SandboxManager } from '../sandbox/index.js';

/** Largest file moved through the API by default. */
export const DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024;
/** Largest JSON body (the create or exec request, stdin included) by default. */
export const DEFAULT_MAX_JSON_BYTES = 16 * 1024 * 1024;

const MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000;
const SANDBOX_ID = /^sb-[a-z2-7]{20}$/;
const LIST_FIX = 'list sandboxes with `cordon sandbox ls` (or GET /v1/sandboxes)';

export interface SandboxRoutesOptions {
  manager: SandboxManager;
  /** Largest file read or written through the API, in bytes. @default 64 MiB */
  maxFileBytes?: number;
  /** Largest JSON request body, in bytes (exec's base64 stdin counts). @default 16 MiB */
  maxJsonBytes?: number;
}

const noNul = (what: string) => z.string().refine((s) => !s.includes('\0'), `${what} must not contain NUL bytes`);
const absolutePath = noNul('a path').pipe(z.string().min(2).max(4096).regex(/^\//, 'must be an absolute path (start with /)'));

export const createBodySchema = z
  .object({
    agent: z.string().regex(AGENT_NAME, 'must be an agent name: lowercase letters, digits and "-", starting with a letter').describe('agent from cordon.yaml'),
    timeoutMs: z.number().int().min(1000).max(MAX_TIMEOUT_MS).optional().describe('lifetime of the sandbox; default: the agent\'s resources.timeout'),
  })
  .strict();

export const execBodySchema = z
  .object({
    argv: z.array(noNul('an argument').pipe(z.string().max(128 * 1024))).min(1, 'needs at least the program name').max(4096)
      .refine((a) => a.length === 0 || (a[0] ?? '').length > 0, 'argv[0] (the program) must not be empty').describe('program and arguments'),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,255}$/, 'environment names are letters, digits and _'), noNul('a value'))
      .refine((e) => Object.keys(e).length <= 1024, 'at most 1024 variables').optional(),
    cwd: absolutePath.optional().describe('working directory in the guest'),
    user: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'must be a user name from the guest /etc/passwd').optional(),
    stdin: z.string().regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, 'must be standard base64').optional()
      .describe('bytes for stdin, base64'),
    timeoutMs: z.number().int().min(1).max(MAX_TIMEOUT_MS).optional(),
    maxOutputBytes: z.number().int().min(0).max(2 ** 40).optional(),
  })
  .strict();

const fileQuerySchema = z.object({ path: absolutePath }).strict();
const putQuerySchema = z
  .object({ path: absolutePath, mode: z.string().regex(/^0?[0-7]{3,4}$|^0o[0-7]{3,4}$/, 'must be an octal file mode such as 644').optional() })
  .strict();

export type CreateSandboxBody = z.infer<typeof createBodySchema>;
export type ExecBody = z.infer<typeof execBodySchema>;

/** One line of the exec stream. */
export type ExecStreamLine =
  | { stdout: string }
  | { stderr: string }
  | { result: import('../sandbox/protocol/index.js').ExecResult }
  | { error: Record<string, unknown> };

type Vars = { Variables: { actor: string } };

/** The routes, to be mounted at `/v1/sandboxes`. */
export function sandboxRoutes(opts: SandboxRoutesOptions): Hono<Vars> {
  const { manager } = opts;
  const maxFileBytes = opts.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
  const maxJsonBytes = opts.maxJsonBytes ?? DEFAULT_MAX_JSON_BYTES;
  const app = new Hono<Vars>();
  const caller = (c: Context<Vars>): Caller => ({ actor: c.get('actor') ?? 'operator' });

  app.post('/', with413(async function createSandbox(c) {
    const body = parse(createBodySchema, await readJson(c, maxJsonBytes), 'request body', 'send {"agent": "NAME", "timeoutMs"?: N}');
    const info = await manager.create({ agent: body.agent, caller: caller(c), ...(body.timeoutMs !== undefined ? { timeoutMs: body.timeoutMs } : {}) });
    return c.json(info, 201);
  }));

  app.get('/', function listSandboxes(c) {
    return c.json({ sandboxes: manager.list() });
  });

  app.get('/:id', function getSandbox(c) {
    return c.json(lookup(manager, c.req.param('id')));
  });

  app.post('/:id/exec', with413(async function execInSandbox(c) {
    const id = lookup(manager, c.req.param('id')).id;
    const body = parse(execBodySchema, await readJson(c, maxJsonBytes), 'request body',
      'send {"argv": ["cmd", …], "env"?, "cwd"?, "user"?, "stdin"? (base64), "timeoutMs"?, "maxOutputBytes"?}');
    const abort = new AbortController();
    c.req.raw.signal.addEventListener('abort', () => abort.abort(), { once: true });
    // Lines wait here until the response stream exists.
    const queue: ExecStreamLine[] = [];
    let sink: ((line: ExecStreamLine) => void) | undefined;
    const send = (line: ExecStreamLine): void => (sink ? sink(line) : void queue.push(line));
    const { stdin, ...rest } = body;
    const outcome = manager
      .run(id, {
        ...rest,
        ...(stdin !== undefined ? { stdin: Buffer.from(stdin, 'base64') } : {}),
        signal: abort.signal,
        onStdout: (chunk) => send({ stdout: chunk.toString('base64') }),
        onStderr: (chunk) => send({ stderr: chunk.toString('base64') }),
      }, caller(c))
      .then((result) => ({ result }), (failure: unknown) => ({ failure }));
    // The manager refuses a bad request (paused or ended sandbox, options over the
    // agent's limits) before it starts anything: answer that with a proper status.
    let early: { failure: unknown } | undefined;
    void outcome.then((o) => (early = 'failure' in o ? o : undefined));
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (early && queue.length === 0) throw early.failure;
    const encoder = new TextEncoder();
    let open = true;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        sink = (line) => {
          if (open) controller.enqueue(encoder.encode(JSON.stringify(line) + '\n'));
        };
        for (const line of queue.splice(0)) sink(line);
        void outcome.then((o) => {
          sink!('failure' in o ? { error: errorBody(o.failure) } : o);
          if (!open) return;
          open = false;
          controller.close();
        });
      },
      cancel() {
        // The client went away: stop the command rather than run it unobserved.
        open = false;
        abort.abort();
      },
    });
    return new Response(stream, { status: 200, headers: { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' } });
  }));

  app.get('/:id/files', with413(async function readSandboxFile(c) {
    const id = lookup(manager, c.req.param('id')).id;
    const q = parse(fileQuerySchema, c.req.query(), 'query', 'pass ?path=/absolute/path');
    let data: Buffer;
    try {
      data = await manager.readFile(id, q.path, { maxBytes: maxFileBytes }, caller(c));
    } catch (err) {
      throw fileError(err, q.path, maxFileBytes);
    }
    return new Response(data, {
      status: 200,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(data.length), 'cache-control': 'no-store' },
    });
  }));

  app.put('/:id/files', with413(async function writeSandboxFile(c) {
    const id = lookup(manager, c.req.param('id')).id;
    const q = parse(putQuerySchema, c.req.query(), 'query', 'pass ?path=/absolute/path and optionally &mode=644');
    const data = await readBody(c, maxFileBytes, 'file');
    const mode = q.mode === undefined ? undefined : Number.parseInt(q.mode.replace(/^0o/, ''), 8);
    try {
      await manager.writeFile(id, q.path, data, mode === undefined ? {} : { mode }, caller(c));
    } catch (err) {
      throw fileError(err, q.path, maxFileBytes);
    }
    return c.json({ path: q.path, bytes: data.length });
  }));

  app.post('/:id/pause', async function pauseSandbox(c) {
    const id = lookup(manager, c.req.param('id')).id;
    return c.json(await manager.pause(id, caller(c)));
  });

  app.post('/:id/resume', async function resumeSandbox(c) {
    const id = lookup(manager, c.req.param('id')).id;
    return c.json(await manager.resume(id, caller(c)));
  });

  app.delete('/:id', async function destroySandbox(c) {
    const id = lookup(manager, c.req.param('id')).id;
    await manager.destroy(id, caller(c), 'destroyed through the API');
    let info: SandboxInfo | { id: string; state: 'destroyed' };
    try {
      info = manager.get(id);
    } catch {
      info = { id, state: 'destroyed' };
    }
    return c.json(info);
  });

  return app;
}

/**
 * A body or file over the size limit. A LimitError (code `limit-exceeded`) that
 * the routes answer with 413 instead of the 429 of rate limits.
 */
export class PayloadTooLargeError extends LimitError {
  override name = 'PayloadTooLargeError';
  constructor(message: string, options: { fix: string; details: Record<string, unknown> }) {
    super(message, undefined, options);
  }
}

/** Wrap a handler so that a PayloadTooLargeError becomes a 413 with the usual error body. */
function with413<C extends Context<Vars>>(handler: (c: C) => Promise<Response>): (c: C) => Promise<Response> {
  return async function payloadLimited(c) {
    try {
      return await handler(c);
    } catch (err) {
      if (err instanceof PayloadTooLargeError) return c.json(err.toJSON(), 413);
      throw err;
    }
  };
}

/** The sandbox, or a 404 that says how to find the right id. */
function lookup(manager: SandboxManager, param: string | undefined): SandboxInfo {
  const id = param ?? '';
  if (!SANDBOX_ID.test(id)) {
    throw new NotFoundError(`"${id.slice(0, 64)}" is not a sandbox id (ids look like sb- and 20 letters and digits)`, { fix: LIST_FIX });
  }
  try {
    return manager.get(id);
  } catch (err) {
    if (err instanceof NotFoundError || (err instanceof CordonError && err.code === 'not-found')) {
      throw new NotFoundError(`no sandbox ${id}`, { fix: LIST_FIX, details: { sandbox: id } });
    }
    throw err;
  }
}

function parse<T extends z.ZodTypeAny>(schema: T, value: unknown, what: string, fix: string): z.infer<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => {
    const where = i.path.length > 0 ? `${i.path.join('.')}: ` : '';
    return i.code === 'unrecognized_keys' ? `${where}unknown field(s) ${i.keys.map((k) => JSON.stringify(k)).join(', ')}` : `${where}${i.message}`;
  });
  throw new InvalidInputError(`invalid ${what}: ${problems.join('; ')}`, { fix, details: { issues: problems } });
}

/** Read the request body into memory, refusing (413) more than `maxBytes`. */
async function readBody(c: Context, maxBytes: number, what: string): Promise<Buffer> {
  const tooLarge = () =>
    new PayloadTooLargeError(`the ${what} is larger than the limit of ${maxBytes} bytes`, {
      fix: `send at most ${maxBytes} bytes, or split the ${what}`,
      details: { maxBytes },
    });
  const declared = c.req.header('content-length');
  if (declared !== undefined && Number(declared) > maxBytes) throw tooLarge();
  const body = c.req.raw.body;
  if (!body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let total = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge();
    }
    chunks.push(Buffer.from(value.buffer, value.byteOffset, value.length));
  }
  return Buffer.concat(chunks, total);
}

async function readJson(c: Context, maxBytes: number): Promise<unknown> {
  const raw = await readBody(c, maxBytes, 'request body');
  if (raw.length === 0) throw new InvalidInputError('the request body is empty', { fix: 'send a JSON object with content-type application/json' });
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new InvalidInputError(`the request body is not JSON: ${(err as Error).message}`, { fix: 'send a JSON object with content-type application/json' });
  }
}

/** A guest file error as the API states it: missing file 404, too large 413. */
function fileError(err: unknown, path: string, maxBytes: number): unknown {
  if (!(err instanceof CordonError) || err.code !== 'sandbox-guest-op') return err;
  const guestCode = err.details?.guestCode;
  if (guestCode === 'not-found') {
    return new NotFoundError(`${path} does not exist in the sandbox`, { fix: 'check the path (e.g. with `ls` through exec)', details: { path } });
  }
  if (guestCode === 'too-large') {
    return new PayloadTooLargeError(`${path} is larger than the limit of ${maxBytes} bytes`, {
      fix: 'read it in parts through exec (e.g. `split` or `head -c`)',
      details: { path, maxBytes },
    });
  }
  return err;
}

/** The `{error, message, fix}` body of an error, for a stream line. */
export function errorBody(err: unknown): Record<string, unknown> {
  if (err instanceof CordonError) return err.toJSON();
  return { error: 'internal', message: 'internal error; see the control-plane log' };
}
