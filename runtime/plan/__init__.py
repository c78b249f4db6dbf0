"""chainray.plan."""
