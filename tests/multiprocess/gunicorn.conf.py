# The gunicorn lines multiprocess mode needs (the README shows the same): a dead worker's live gauges
# (in flight, longest running) go with it; its counters stay. The exporter's mark_process_dead is
# prometheus_client's that also removes the exporter's own files (named <pid>-claude.db).
from claude_exporter import mark_process_dead


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    mark_process_dead(worker.pid)
