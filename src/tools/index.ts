/**
 * tools/: the MCP tools gateway. Not built yet: see the tools and approvals issue.
 */
export {};
