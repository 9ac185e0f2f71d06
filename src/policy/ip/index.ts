/**
 * policy/ip: pure address handling for the egress proxy and the egress policy:
 * parsing IP literals in every notation, CIDR containment, and classifying a
 * resolved address as dialable or not (with a stable deny reason). No sockets.
 */
export { parseIpLiteral, formatIp, looksLikeIpv4, type ParsedIp, type IpNotation } from './parse.js';
export { parsePrefix, prefixContains, formatPrefix, type IpPrefix } from './prefix.js';
export {
  classifyAddress, createAddressClassifier, unmapIpv4, DENY_REASONS,
  type DenyReason, type AddressClass, type ClassifyOptions,
} from './classify.js';
