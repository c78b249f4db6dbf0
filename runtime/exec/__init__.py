"""chainray.exec."""
