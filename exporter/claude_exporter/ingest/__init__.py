"""Events from outside the process: POST /v1/events, --tail, and Claude Code's OTLP export and hooks."""
