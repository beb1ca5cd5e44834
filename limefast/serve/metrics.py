"""Prometheus metrics of ``limefast serve`` (``GET /metrics``): request latency, queue depth,
explanations in flight, model batch sizes, rejections, responses by status."""

from __future__ import annotations

from limefast.optional import require

# Seconds: a latency histogram around the budgets people ask for (150 ms to a few seconds).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0,
                   10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The server's metrics, in a registry of its own (two apps in one process do not clash).

    Args:
        models: name -> ``ServedModel``: their schedulers' queues are read at scrape time.
    """

    def __init__(self, models: dict):
        prom = require("prometheus_client", "limefast serve's /metrics")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.latency = prom.Histogram("limefast_request_seconds", "Request latency",
                                      ["model", "verb", "code"], buckets=LATENCY_BUCKETS,
                                      registry=r)
        self.batch_images = prom.Histogram("limefast_batch_images", "Images per model call",
                                           ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = prom.Histogram("limefast_batch_requests",
                                             "Requests sharing a model call", ["model"],
                                             buckets=BATCH_BUCKETS, registry=r)
        self.model_seconds = prom.Histogram("limefast_batch_seconds", "Seconds per model call",
                                            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.rejections = prom.Counter("limefast_rejections", "Requests answered 503 "
                                       "(overloaded)", ["model"], registry=r)
        self.cancelled = prom.Counter("limefast_cancelled", "Explanations cancelled by a client "
                                      "that disconnected", ["model"], registry=r)
        self.responses = prom.Counter("limefast_responses", "Responses by status code", ["code"],
                                      registry=r)
        queue = prom.Gauge("limefast_queue_images", "Images waiting for a model call",
                           ["model"], registry=r)
        inflight = prom.Gauge("limefast_inflight_explanations", "Explanations running",
                              ["model"], registry=r)
        for name, model in models.items():
            scheduler = model.scheduler
            queue.labels(name).set_function(lambda s=scheduler: s.queue.queued_images)
            inflight.labels(name).set_function(lambda s=scheduler: s.inflight)
            scheduler.queue.on_batch = self._batch_hook(name)

    def _batch_hook(self, name: str):
        images, requests, seconds = (self.batch_images.labels(name),
                                     self.batch_requests.labels(name),
                                     self.model_seconds.labels(name))

        def on_batch(n_images: int, n_requests: int, call_seconds: float) -> None:
            images.observe(n_images)
            requests.observe(n_requests)
            seconds.observe(call_seconds)
        return on_batch

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
