"""From requests and executions to series, with no SDK and no prometheus_client import."""
