/**
 * Types shared by the gateway's modules: who calls (the sandbox identity the
 * channel vouches for), how a caller is authenticated, and the small transport
 * interface (`Exchange`) that lets one request pipeline serve both plain
 * `node:http` request/response pairs and Fetch `Request`s (Hono).
 */

/** The sandbox behind a channel, as the egress proxy knows it (never from anything the guest says). */
export interface GatewayCaller {
  sandboxId: string;
  agent: string;
}

/** What an authenticator may look at. */
export interface AuthRequest {
  readonly method: string;
  /** Path without the query, e.g. `/v1/chat/completions`. */
  readonly path: string;
  /** A request header (lower-case name), or undefined. */
  header(name: string): string | undefined;
}

export type AuthResult = { ok: true; agent: string; sandboxId: string } | { ok: false; reason: string };

/**
 * Checks the sandbox token a request carries. `caller` is the identity of the
 * channel the request came through (undefined on the standalone server): a
 * token of another sandbox must be refused. A throw or rejection means refuse.
 */
export type Authenticate = (req: AuthRequest, caller: GatewayCaller | undefined) => Promise<AuthResult>;

/** The APIs the gateway serves. */
export type ApiKind = 'chat.completions' | 'responses' | 'embeddings' | 'messages' | 'models';

/** One request and its response, whatever the transport. */
export interface Exchange extends AuthRequest {
  /** Aborted when the client goes away before the response ended. */
  readonly signal: AbortSignal;
  /** The client went away before the response ended (what `signal.aborted` says, without making a signal). */
  readonly aborted: boolean;
  /** Call `listener` once if the client goes away before the response ended; returns the undo. */
  onAbort(listener: () => void): () => void;
  /**
   * The whole request body, at most `maxBytes`.
   * @throws GatewayError 413 `body-too-large`, 415 `unsupported-encoding`, 400 `client-closed`
   */
  readBody(maxBytes: number): Promise<Buffer>;
  /** A complete response. */
  send(status: number, headers: Record<string, string>, body: string | Buffer): void;
  /** Start a streamed response; headers go out with the first write, or on their own within a turn of the event loop. */
  startStream(status: number, headers: Record<string, string>): void;
  /** Write part of a streamed response; a promise means: wait for it before writing more. */
  write(chunk: string): Promise<void> | undefined;
  /** End a streamed response, with a last piece if given (one write for both). */
  end(last?: string): void;
  /** True once a response started (headers sent or queued). */
  readonly started: boolean;
}

/** Token counts as a provider reports them. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
}
