/**
 * secrets/: the encrypted secret store and per-sandbox placeholders swapped at
 * the proxy. Not built yet: see the identity and secrets issue.
 */
export {};
