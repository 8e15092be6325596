"""OpenTelemetry spans for the flow: ``ingest`` → ``window.close`` → ``delivery.attempt``.

Optional: with the ``otel`` extra installed (``pip install broker[otel]``) and the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` set, :func:`configure` exports spans over OTLP/HTTP; otherwise
every hook here is a no-op that costs one flag check (the hot paths call them per delivery).

The three steps happen in different processes and at different times, so the context travels in
the rows that carry the work (W3C ``traceparent`` text): an ingest commit's context is appended
to each ``window_groups.trace_links`` it feeds; the close span *links* to those (a window folds
many commits, a span has one parent) and its own context goes into ``events.trace_parent``;
each delivery attempt is a *child* of its event's close. One resource event's trace therefore
reads ingest → (link) → close → attempts.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is not installed: every hook is a no-op
    trace = None  # type: ignore[assignment]

# The tracer spans are made with; None while tracing is off.
_tracer: Any = None


def install(provider: Any | None) -> None:
    """Trace through ``provider`` (an SDK TracerProvider), or stop tracing with None."""
    global _tracer
    _tracer = None if provider is None or trace is None else provider.get_tracer("broker")


def configure() -> bool:
    """Export over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the extra is installed."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or _tracer is not None:
        return _tracer is not None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but broker[otel] is not installed")
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "broker")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    log.info("tracing: exporting spans to %s", os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
    return True


def enabled() -> bool:
    return _tracer is not None


def _context(traceparent: str | None) -> Any:
    if not traceparent:
        return None
    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


_OFF = contextlib.nullcontext()


def span(
    name: str,
    *,
    parent: str | None = None,
    links: Sequence[str] | None = None,
    **attributes: Any,
) -> contextlib.AbstractContextManager[Any]:
    """A span named ``name`` (the current one while inside), or nothing when tracing is off.

    ``parent`` and ``links`` are traceparents read from the rows; ``attributes`` become
    ``broker.<name>`` attributes (UUIDs as text, lists of them as lists of text). Off, this is
    one shared null context: nothing is built per call on the delivery path.
    """
    if _tracer is None:
        return _OFF
    return _span(name, parent, links, attributes)


@contextlib.contextmanager
def _span(
    name: str, parent: str | None, links: Sequence[str] | None, attributes: dict[str, Any]
) -> Iterator[Any]:
    span_links = []
    for text in links or ():
        context = trace.get_current_span(_context(text)).get_span_context()
        if context.is_valid:
            span_links.append(trace.Link(context))
    with _tracer.start_as_current_span(
        name,
        context=_context(parent),
        links=span_links,
        attributes={f"broker.{k}": _attribute(v) for k, v in attributes.items()},
    ) as current:
        yield current


def _attribute(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, (int, float, bool)) else str(v) for v in value]
    return value if isinstance(value, (int, float, bool, str)) else str(value)


def set_attributes(**attributes: Any) -> None:
    """Add attributes learned after the current span started (nothing when tracing is off)."""
    if _tracer is not None:
        trace.get_current_span().set_attributes(
            {f"broker.{k}": _attribute(v) for k, v in attributes.items()}
        )


def current_traceparent() -> str | None:
    """The current span's context as W3C ``traceparent`` text, for a row; None when off."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")
