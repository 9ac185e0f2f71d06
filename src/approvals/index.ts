/**
 * approvals/: high-risk actions held for a human decision. Not built yet.
 */
export {};
