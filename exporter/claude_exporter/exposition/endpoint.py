"""GET /metrics as prometheus_client serves it, with the recorder's families written by the writer.

What prometheus_client's own ``make_wsgi_app`` does, kept: the format chosen from ``Accept`` by its
``choose_encoder`` (text 0.0.4 unless OpenMetrics or text 1.0.0 is asked for), ``name[]`` filtering
through ``restricted_registry``, gzip when ``Accept-Encoding`` takes it, OPTIONS answered and any other
method but GET refused (405; HEAD included, as there). The registry is rendered by prometheus_client with
:func:`~claude_exporter.exposition.collectors.capturing` on, so each recorder collector in it yields
nothing there and is written by the writer instead, ahead of the other collectors' families (the
application's own, the process collectors) and of OpenMetrics' ``# EOF``. A format the writer does not
write (an escaping that rewrites metric names, an OpenMetrics version other than 1.0.0) is left to
prometheus_client whole. ``choose_encoder`` and ``gzip_accepted`` are prometheus_client's public functions
(outside its ``__all__``); tests/test_exposition_writer.py holds this app to ``make_wsgi_app``'s answers.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from claude_exporter.exposition.collectors import capturing

__all__ = ["GZIP_LEVEL", "metrics_app", "render"]

# prometheus_client compresses at 9, which on a fleet's exposition costs more than the rendering; 1 (zlib's
# fastest) is about 4 times faster than the default 6 and 15 times faster than 9, for a payload 40% bigger
# than 9's, still 18 to 21 times smaller than the text (docs/benchmarks.md, "The cost of a scrape").
GZIP_LEVEL = 1

# The media types and versions the writer writes (content types as choose_encoder names them), and the
# escapings under which prometheus_client leaves legal names as they are.
_FORMATS = {
    ("text/plain", "0.0.4"): False,
    ("text/plain", "1.0.0"): False,
    ("application/openmetrics-text", "1.0.0"): True,
}
_ESCAPINGS = {"underscores", "allow-utf-8"}

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def _writer_format(content_type: str) -> bool | None:
    """Whether the writer writes ``content_type`` as OpenMetrics (True) or text (False); None: it does
    not write that format or escaping."""
    media, *params = (part.strip() for part in content_type.split(";"))
    options = dict(param.partition("=")[::2] for param in params)
    if options.get("escaping", "underscores") not in _ESCAPINGS:
        return None
    return _FORMATS.get((media, options.get("version", "")))


def render(registry: Any, accept: str | None = None, names: list[str] | None = None) -> tuple[bytes, str]:
    """The exposition of ``registry`` for an ``Accept`` header, and its content type: what
    prometheus_client's ``make_wsgi_app`` serves, with the recorder's families written by the writer.
    ``names``: the ``name[]`` filter."""
    encoder, content_type = choose_encoder(accept)  # type: ignore[arg-type]
    source = registry if names is None else registry.restricted_registry(names)
    openmetrics = _writer_format(content_type)
    if openmetrics is None:
        return encoder(source), content_type
    with capturing() as ours:
        rest = encoder(source)
    if not ours:
        return rest, content_type
    wanted = None if names is None else set(names)
    return b"".join([*(c.exposition(openmetrics, wanted) for c in ours), rest]), content_type


def metrics_app(registry: CollectorRegistry) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    """The ``/metrics`` WSGI app for ``registry``."""

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            start_response("200 OK", [("Allow", "OPTIONS,GET")])
            return [b""]
        if method != "GET":
            start_response("405 Method Not Allowed", [("Allow", "OPTIONS,GET")])
            return [f"# HTTP 405 Method Not Allowed: {method}; use OPTIONS or GET\n".encode()]
        params = parse_qs(environ.get("QUERY_STRING", ""))
        output, content_type = render(registry, environ.get("HTTP_ACCEPT"), params.get("name[]"))
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING")):  # type: ignore[arg-type]
            output = gzip.compress(output, compresslevel=GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [output]

    return app
