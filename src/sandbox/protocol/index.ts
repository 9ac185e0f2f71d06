/**
 * Host side of the guest control protocol (docs/guest-protocol.md): framing,
 * message schemas, and the GuestChannel that drives one guest agent.
 */
export {
  CONTROL_CHANNEL, DATA_CHUNK_BYTES, FRAME_HEADER_BYTES, FrameDecoder, FrameKind, GUEST_CHANNEL_BASE,
  INITIAL_WINDOW_BYTES, MAX_CLOSE_REASON_BYTES, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES, MAX_WINDOW_BYTES, encodeFrame,
} from './frame.js';
export type { Frame, FrameDecoderOptions } from './frame.js';
export { GuestOpError, GuestProtocolError } from './errors.js';
export type { ProtocolErrorReason } from './errors.js';
export {
  PROTOCOL_VERSION, decodeControl, errorResponseSchema, helloSchema, logSchema, notificationSchemas, responseSchemas,
  streamOpenSchema,
} from './messages.js';
export type { GuestHealth, GuestHello, GuestLog, GuestOp, GuestResponse, StreamOpen } from './messages.js';
export {
  DEFAULT_EXEC_TIMEOUT_MS, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_OUTPUT_BYTES, GuestChannel,
} from './guest-channel.js';
export { GuestConnection } from './connection.js';
export type { GuestChannelEvents, GuestChannelOptions } from './connection.js';
export { GuestStream } from './guest-stream.js';
export type {
  ExecHandle, ExecOptions, ExecResult, ReadFileOptions, SignalName, SpawnOptions, WriteFileOptions,
} from './types.js';
