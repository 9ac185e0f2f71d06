/**
 * Errors of the guest control channel.
 *
 * A {@link GuestProtocolError} means the guest broke the protocol: the host
 * closes the whole connection. A {@link GuestOpError} is an ordinary failed
 * request (`{"ok":false,"error":{…}}`): the connection stays up.
 */
import { SandboxError } from '../../errors/index.js';

/** Why the host gave up on a guest connection. One value per rule in docs/guest-protocol.md. */
export type ProtocolErrorReason =
  | 'frame-too-large'
  | 'frame-too-short'
  | 'unknown-kind'
  | 'truncated-frame'
  | 'control-on-data-channel'
  | 'data-on-control-channel'
  | 'bad-utf8'
  | 'bad-json'
  | 'bad-message'
  | 'unknown-op'
  | 'unknown-response-id'
  | 'bad-response'
  | 'unknown-channel'
  | 'unexpected-frame'
  | 'channel-in-use'
  | 'stream-limit'
  | 'empty-data'
  | 'data-after-eof'
  | 'duplicate-eof'
  | 'bad-eof'
  | 'bad-window'
  | 'window-exceeded'
  | 'window-overflow'
  | 'bad-close'
  | 'duplicate-hello'
  | 'unsupported-protocol'
  | 'output-limit-exceeded'
  | 'file-limit-exceeded'
  | 'length-mismatch'
  | 'log-flood';

/** The guest broke the protocol; the connection has been closed. */
export class GuestProtocolError extends SandboxError {
  override name = 'GuestProtocolError';
  readonly reason: ProtocolErrorReason;
  constructor(reason: ProtocolErrorReason, message: string) {
    super('sandbox-protocol', `guest protocol error (${reason}): ${message}`, {
      fix: 'The guest agent sent something the protocol forbids, so cordon closed its control channel. ' +
        'Destroy this sandbox; if a fresh one does the same, rebuild the guest image (`cordon image build`).',
      details: { reason },
    });
    this.reason = reason;
  }
}

/** A request the guest answered with `ok: false`. */
export class GuestOpError extends SandboxError {
  override name = 'GuestOpError';
  /** The op that failed, e.g. `file.read`. */
  readonly op: string;
  /** The guest's error code, e.g. `not-found`, `too-large`, `permission-denied`. */
  readonly guestCode: string;
  constructor(op: string, guestCode: string, message: string) {
    super('sandbox-guest-op', `guest ${op} failed (${guestCode}): ${message}`, { details: { op, guestCode } });
    this.op = op;
    this.guestCode = guestCode;
  }
}
