"""What Prometheus and people read: collectors, multiprocess mode, the HTTP server, health, event log."""
