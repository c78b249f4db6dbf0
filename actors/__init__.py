"""Ray actors of chainray: the RateLimiter, the Coordinator and the step runners."""
