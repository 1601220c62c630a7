"""The interceptor chain of every Paygate server, listed once.

Outermost first:

1. the cap on open streams (health Watch and reflection need no token, so without it a few
   open streams would take every call slot);
2. the call's span (tracing);
3. its metrics and
4. its log line, both inside the span, for exemplars and trace ids;
5. domain errors mapped to status codes with a google.rpc.ErrorInfo reason;
6. the service's own gates: who the caller is and what it may call (the gateway's bearer
   token, a bank's or an operator's client certificate), which raise domain errors for 5
   to map.
"""

from __future__ import annotations

import grpc

from paygate.common import tracing
from paygate.common.error_interceptor import ErrorInterceptor
from paygate.common.logging_interceptor import LoggingInterceptor
from paygate.common.metrics import GrpcMetrics
from paygate.common.metrics_interceptor import MetricsInterceptor
from paygate.common.stream_limit_interceptor import StreamLimitInterceptor


def server_interceptors(
    metrics: GrpcMetrics, *gates: grpc.aio.ServerInterceptor
) -> list[grpc.aio.ServerInterceptor]:
    """The chain above, recording in `metrics` (GrpcMetrics.build(registry, "server"), one
    for all the servers of a process), with the `gates` innermost, in order."""
    return [
        StreamLimitInterceptor(),
        tracing.server_interceptor(),
        MetricsInterceptor(metrics),
        LoggingInterceptor(),
        ErrorInterceptor(),
        *gates,
    ]
