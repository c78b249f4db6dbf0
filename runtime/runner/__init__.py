"""chainray.runner: running one chain: DAG dispatch, one step's execution, the run journal and
the run summary."""
