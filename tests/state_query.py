"""What Ray's state API shows of one job, as JSON on stdout: ``python -m tests.state_query
DASHBOARD_URL JOB_NAME TIMEOUT_S``.

A process of its own: it reads a token-authenticated cluster (RAY_AUTH_MODE=token), which the
test process, in RAY_AUTH_MODE=disabled, cannot. Task events reach the state API a second or
so after the tasks end, so it waits (at most TIMEOUT_S) until the job's tasks have all ended.
"""

from __future__ import annotations

import json
import sys
import time

from ray.util.state import list_actors, list_jobs, list_tasks

ENDED = {"FINISHED", "FAILED"}


def job_named(url: str, name: str):
    for job in list_jobs(address=url, detail=True, limit=1000):
        if (job.metadata or {}).get("job_name") == name:
            return job
    return None


def main(url: str, name: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while (job := job_named(url, name)) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if job is None:
        return {"job": None, "jobs": [j.metadata for j in list_jobs(address=url, detail=True)]}
    while True:
        tasks = list_tasks(address=url, filters=[("job_id", "=", job.job_id)], limit=10_000,
                           detail=True, raise_on_missing_output=False)
        if (tasks and all(t.state in ENDED for t in tasks)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    actors = [a for a in list_actors(address=url, limit=10_000, detail=True,
                                     raise_on_missing_output=False)
              if a.job_id == job.job_id]
    return {"job": {"id": job.job_id, "metadata": job.metadata, "status": str(job.status)},
            "tasks": [{"name": t.name, "state": t.state, "type": t.type,
                       "error": t.error_message} for t in tasks],
            "actors": [{"class": a.class_name, "name": a.name, "repr": a.repr_name}
                       for a in actors]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], float(sys.argv[3]))))
