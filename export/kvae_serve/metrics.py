"""Prometheus metrics (prometheus-client): requests by endpoint and status, latency, batch sizes and
rejected requests.  With several workers (``PROMETHEUS_MULTIPROC_DIR`` set by ``kvae-serve`` before
they start) every worker writes its samples there and ``/metrics`` adds them up."""
import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The server's metrics in a registry of its own (several apps can live in one process)."""

    def __init__(self):
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        registry = None if self.multiprocess else CollectorRegistry()
        self.registry = registry
        self.requests = Counter("kvae_requests", "Requests answered, by endpoint and HTTP status",
                                ["endpoint", "status"], registry=registry)
        self.latency = Histogram("kvae_request_seconds", "Time from the request's arrival to its answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_rows = Histogram("kvae_batch_rows", "Rows per onnxruntime run (after micro-batching)",
                                    ["endpoint"], buckets=BATCH_BUCKETS, registry=registry)
        self.rejected = Counter("kvae_rejected", "Requests refused before running, by endpoint and reason",
                                ["endpoint", "reason"], registry=registry)

        self._children = {}  # {(endpoint, status): (counter, histogram)}: labels() looked up once per pair

    def observe(self, endpoint, status, seconds):
        """Count an answer of ``endpoint`` with ``status`` that took ``seconds``."""
        children = self._children.get((endpoint, status))
        if children is None:
            children = self._children[endpoint, status] = (self.requests.labels(endpoint, str(status)),
                                                           self.latency.labels(endpoint))
        children[0].inc()
        children[1].observe(seconds)

    def reject(self, endpoint, reason):
        """Count a request of ``endpoint`` refused for ``reason`` (a status or ``queue_full``)."""
        self.rejected.labels(endpoint, reason).inc()

    def exposition(self):
        """``(body, content type)`` of ``GET /metrics``."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
