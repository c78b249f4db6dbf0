"""chainray.call: one LLM call, from request to reply: the endpoint and its client, parameter
adaptations, retries, streaming, structured output and the table of endpoint errors."""
