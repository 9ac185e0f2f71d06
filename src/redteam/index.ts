/**
 * redteam/: attacks run from inside real sandboxes, scored by outcome. Not built yet.
 */
export {};
