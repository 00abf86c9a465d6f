# The gunicorn lines multiprocess mode needs (the README shows the same): a dead worker's live gauges
# (in flight, longest running) go with it; its counters stay.
from prometheus_client import multiprocess


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    multiprocess.mark_process_dead(worker.pid)
