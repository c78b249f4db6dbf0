"""chainray.limit: the rate limit: where each limit came from, the permit book that holds
requests, tokens and concurrency under it, and a permit as an ``async with`` resource."""
