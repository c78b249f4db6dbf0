"""chainray.cli."""
