"""chainray.spec."""
