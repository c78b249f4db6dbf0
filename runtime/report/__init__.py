"""chainray.report."""
