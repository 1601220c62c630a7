"""The interceptor chain of every Paygate server, listed once.

Outermost first:

1. the cap on open streams (health Watch and reflection need no token, so without it a few
   open streams would take every call slot);
2. the call's span (tracing);
3. its metrics and
4. its log line, both inside the span, for exemplars and trace ids;
5. domain errors mapped to status codes with a google.rpc.ErrorInfo reason;
6. the service's own gate: who the caller is and what it may call (the gateway's bearer
   token, a bank's client certificate), which raises domain errors for 5 to map.
"""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry

from paygate.common import tracing
from paygate.common.error_interceptor import ErrorInterceptor
from paygate.common.logging_interceptor import LoggingInterceptor
from paygate.common.metrics import GrpcMetrics
from paygate.common.metrics_interceptor import MetricsInterceptor
from paygate.common.stream_limit_interceptor import StreamLimitInterceptor


def server_interceptors(
    registry: CollectorRegistry, gate: grpc.aio.ServerInterceptor
) -> list[grpc.aio.ServerInterceptor]:
    """The chain above, with the server's metrics in `registry` and `gate` innermost."""
    return [
        StreamLimitInterceptor(),
        tracing.server_interceptor(),
        MetricsInterceptor(GrpcMetrics.build(registry, "server")),
        LoggingInterceptor(),
        ErrorInterceptor(),
        gate,
    ]
