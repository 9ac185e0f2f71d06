/**
 * identity/: per-sandbox SPIFFE identities and short-lived EdDSA tokens bound to
 * the sandbox channel. Not built yet: see the identity and secrets issue.
 */
export {};
