"""chainray: run LLM prompt chains on Ray under one rate limit, and measure the schedules."""
