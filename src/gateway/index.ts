/**
 * gateway/: the LLM gateway (OpenAI- and Anthropic-compatible), the only way to
 * a model. Not built yet: see the gateway issue.
 */
export {};
