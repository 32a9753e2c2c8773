"""A process that runs actions of the small AWS deployment in forked children, for the kill tests (``test_aws_kill``).

Started once (``python aws_child.py``), it imports the engine and parses the template, prints ``ready`` and
then serves jobs, one JSON line each on stdin::

    {"action": "create", "store_url": ..., "conn_id": ..., "deployment_id": ..., "actor": ...}

For a job it forks a child and answers ``{"pid": P}``; the child waits until the test sends a line (``go``),
so the test can arm the proxy with P before the first EC2 call; then the child runs the action and exits
(0: completed, 1: an error, printed on stderr). The server reaps it and answers
``{"pid": P, "exit": code}`` (``-9``: SIGKILLed). Forking saves each job the seconds of importing
Airflow; the child is still a process of its own, with its own pid, lease and EC2 client. stdout is
the test's channel only: logs go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def _run(job: dict, go: int) -> int:
    """Run one job in the forked child; return its exit status."""
    from aws_faults import run_action

    from airflow_cloud_paas.backends.aws import AWSBackend
    from airflow_cloud_paas.store import DeploymentStore

    store = DeploymentStore(job["store_url"])
    backend = AWSBackend(job["conn_id"], wait_timeout=30, poll_interval=0.05)
    os.read(go, 1)  # the test has armed the proxy with this pid
    try:
        run_action(job["action"], store, backend, job["deployment_id"], job["actor"])
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def serve(requests, answers) -> None:
    """Serve jobs from ``requests`` until it ends, answering on ``answers``.

    :param requests: a text stream of JSON jobs and ``go`` lines
    :param answers: a text stream for the answers
    """
    while line := requests.readline():
        job = json.loads(line)
        go_read, go_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never return into the server's loop
            status = 1
            try:
                os.close(go_write)
                status = _run(job, go_read)
            finally:
                sys.stderr.flush()
                os._exit(status)
        os.close(go_read)
        print(json.dumps({"pid": pid}), file=answers, flush=True)
        requests.readline()  # "go"
        os.write(go_write, b"g")
        os.close(go_write)
        _, status = os.waitpid(pid, 0)  # reaped at once: a dead holder must not linger as a zombie
        print(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}), file=answers, flush=True)


def main() -> None:
    """Import and parse once, say ``ready``, then serve jobs."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever logs to stdout goes to stderr: stdout is the test's channel
    sys.stdout = sys.stderr
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from aws_faults import topology

    import airflow_cloud_paas.backends.aws  # noqa: F401 - imported once, before the forks
    import airflow_cloud_paas.deployer  # noqa: F401

    topology()
    print("ready", file=answers, flush=True)
    serve(sys.stdin, answers)


if __name__ == "__main__":
    main()
