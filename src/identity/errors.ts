/**
 * The identity layer's own error: a token cannot be issued (the sandbox's
 * identity was revoked, the ring has no usable key, a token came out too big).
 * Key file problems are `KeyError`s and bad arguments `InvalidInputError`s,
 * from `src/errors`.
 */
import { CordonError, type CordonErrorOptions } from '../errors/index.js';

export class IdentityError extends CordonError {
  override name = 'IdentityError';
  constructor(code: `identity-${string}`, message: string, options: CordonErrorOptions = {}) {
    super(code, message, options);
  }
}
