"""OpenTelemetry tracing, configured by the standard OTEL_* environment variables.

    OTEL_SERVICE_NAME              the process's name in traces (supervisord.conf sets it)
    OTEL_TRACES_EXPORTER           otlp (the default), console, or none
    OTEL_EXPORTER_OTLP_ENDPOINT    where OTLP spans go over gRPC, e.g. http://127.0.0.1:4317
                                   (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    OTEL_TRACES_SAMPLER            e.g. parentbased_traceidratio with OTEL_TRACES_SAMPLER_ARG
    OTEL_SDK_DISABLED=true         no tracing at all

With the otlp exporter and no endpoint, or with `none`, no SDK is installed: the API's no-op
tracer makes every span a shared non-recording object, and nothing is exported. Trace
context still flows, so a caller's trace id reaches the logs of a process that does not
export.

While an SDK is installed, the interceptors are the official opentelemetry-instrumentation-
grpc ones for grpc.aio, with health checks filtered out: a monitor polling them would
otherwise fill the traces. While none is, they would only make non-recording spans at a
measurable cost per call (a fifth of a bare call's), so the server's interceptor does what
is left to do, and only for a call that carries trace context: it attaches the caller's
context while the call is handled (for the log lines, and for the calls it makes in turn,
which pass it on with `outgoing_metadata`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from paygate.common.handlers import Context, Handler, UnaryBehavior, wrap_unary

EXPORTERS = ("otlp", "console", "none")
HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"
_HEALTH_METHOD_PREFIX_BYTES = HEALTH_METHOD_PREFIX.encode()
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for something this build cannot do."""


def exporter_name(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The exporter the environment asks for, "none" when nothing would be exported."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    name = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if name not in EXPORTERS:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={name!r} is not supported; use one of {', '.join(EXPORTERS)}"
        )
    if name == "otlp" and not any(env.get(v, "").strip() for v in ENDPOINT_VARIABLES):
        return "none"
    return name


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        # Standard error is where the JSON logs go, into the program's log file.
        return ConsoleSpanExporter(out=sys.stderr)
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip().lower()
    if protocol != "grpc":
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; only grpc is installed"
        )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout and TLS from OTEL_EXPORTER_OTLP_*


def setup_tracing(default_service_name: str) -> TracerProvider | None:
    """Install the SDK as the global tracer provider when spans would go somewhere.

    Returns the provider (call its shutdown() at exit to flush), or None when tracing is
    off. The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    """
    name = exporter_name()
    if name == "none":
        return None
    attributes: dict[str, Any] = {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = default_service_name
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    return provider


def traced(call_details: Any) -> bool:
    """Whether a call gets a span: every call but health checks.

    The library's own `negate(health_check())` says the same through os.path and isinstance
    checks against abstract classes on every call, a measurable share of a call's cost.
    grpc.aio's client call details carry the method as bytes, a server's as str.
    """
    method = call_details.method
    if isinstance(method, bytes):
        return not method.startswith(_HEALTH_METHOD_PREFIX_BYTES)
    return not method.startswith(HEALTH_METHOD_PREFIX)


def recording() -> bool:
    """Whether spans go anywhere: an SDK is installed as the global tracer provider."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """The call's span while an SDK is installed (OpenTelemetry's own interceptor, asked per
    call, so that a provider installed after the server starts is used); otherwise only the
    caller's trace context, when it sent one (module docstring)."""

    def __init__(self) -> None:
        self._otel: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            filter_=traced
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        if recording():
            return await self._otel.intercept_service(continuation, handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # a stream: health Watch, reflection, WatchEvents
        carrier = {
            key: value
            for key, value in handler_call_details.invocation_metadata or ()
            if key in _PROPAGATED and isinstance(value, str)
        }
        if not carrier:
            return handler
        remote = propagate.extract(carrier)

        def wrapper(behavior: UnaryBehavior) -> UnaryBehavior:
            async def in_callers_context(request: Any, context: Context) -> Any:
                token = otel_context.attach(remote)
                try:
                    return await behavior(request, context)
                finally:
                    otel_context.detach(token)

            return in_callers_context

        return wrap_unary(handler, wrapper)


# The metadata keys the global propagator reads (W3C trace context and baggage).
_PROPAGATED = frozenset({"traceparent", "tracestate", "baggage"})


def server_interceptor() -> grpc.aio.ServerInterceptor:
    """The tracing server interceptor; list it first, so every other one is in its span."""
    return TracingInterceptor()


def outgoing_metadata() -> tuple[tuple[str, str], ...] | None:
    """The current trace context as call metadata, for a channel without the OpenTelemetry
    client interceptors (`client_interceptors_if_recording`); None when there is none."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items()) or None


def client_interceptors_if_recording() -> list[grpc.aio.ClientInterceptor]:
    """The OpenTelemetry client interceptors while an SDK is installed, else none: grpc.aio
    runs every call of a channel with interceptors through a task of its own, which costs
    a tenth of a bare call; the caller then passes `outgoing_metadata()` itself."""
    return client_interceptors() if recording() else []


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The OpenTelemetry client interceptors; list them first on a channel."""
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(  # type: ignore[no-untyped-call]
        filter_=traced
    )
    return interceptors
