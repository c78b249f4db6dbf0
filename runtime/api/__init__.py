"""chainray.api."""
