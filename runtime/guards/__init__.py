"""chainray.guards: what guards a call besides the rate limit: the spend cap, the response
cache and hedged stragglers."""
