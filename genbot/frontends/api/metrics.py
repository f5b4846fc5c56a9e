"""Prometheus metrics of one app, in a registry of its own (several apps in one process never clash)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Time to first character spans a cold prompt on a busy CPU (seconds) to a warm GPU (ms).
TTFC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    """Requests, characters, streams, queue depth, time to first char and jobs, for ``/metrics``."""

    def __init__(
        self, queue_depth: Callable[[], float], paths: Callable[[], dict[str, dict[str, object]]] | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "genbot_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.chars = Counter("genbot_chars_generated", "Characters sent to API clients", ["model"], registry=r)
        self.active_streams = Gauge("genbot_active_streams", "Generations being streamed to clients now", registry=r)
        self.queue_depth = Gauge("genbot_engine_queue_depth", "Streams queued or running in the engine", registry=r)
        self.queue_depth.set_function(queue_depth)
        self.ttfc = Histogram(
            "genbot_time_to_first_char_seconds",
            "From the request to its first generated character",
            ["model"],
            buckets=TTFC_BUCKETS,
            registry=r,
        )
        self.jobs = Gauge("genbot_jobs", "Background jobs by state", ["state"], registry=r)
        self._paths = paths
        self.engine_path = Gauge(
            "genbot_engine_path", "1 for the prime/step path each model serves through", ["model", "prime", "step"],
            registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        """The exposition text of every metric."""
        if self._paths is not None:
            self.engine_path.clear()
            for model, p in self._paths().items():
                prime, step = str(p.get("prime")), str(p.get("step"))
                if p.get("step_few"):  # fast mode: a lone-stream kernel below some batch size
                    step = f"{p['step_few']} below {p.get('few_below')} rows, else {step}"
                if p.get("prime_lone"):  # fast mode: a lone prompt's own reader
                    prime = f"{p['prime_lone']} alone, else {prime}"
                self.engine_path.labels(model, prime, step).set(1)
        return generate_latest(self.registry)
