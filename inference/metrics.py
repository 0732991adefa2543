"""Prometheus metrics of the node (prefix ``asrnode_``). Labels: model, reason, outcome, state,
device — all bounded; no request ids, no tenants.

A model's series are created with every label value when its host is built, so dashboards and
alerts see 0 rather than nothing. The GPU memory gauges exist only on a node where CUDA is in use.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# No ``*_created`` series: they double the series count and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RTF_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2)

queue_depth = Gauge(
    "asrnode_queue_depth", "Work items waiting for the model's inference thread.", ["model"]
)
items_in_progress = Gauge(
    "asrnode_items_in_progress", "Work items inside the engine right now.", ["model"]
)
requests_in_flight = Gauge(
    "asrnode_requests_in_flight", "Admitted requests not finished yet (bounded).", ["model"]
)
batch_size = Histogram(
    "asrnode_batch_size", "Items per batched engine call.", ["model"], buckets=BATCH_SIZE_BUCKETS
)
engine_calls = Counter(
    "asrnode_engine_calls_total", "Batched engine calls (generate() calls for FunASR).", ["model"]
)
items = Counter("asrnode_items_total", "Work items run, by outcome.", ["model", "outcome"])
inference_seconds = Histogram(
    "asrnode_inference_seconds",
    "Wall time of one batched engine call.",
    ["model"],
    buckets=SECONDS_BUCKETS,
)
audio_seconds = Counter("asrnode_audio_seconds_total", "Seconds of audio recognized.", ["model"])
real_time_factor = Histogram(
    "asrnode_real_time_factor",
    "Batch wall time divided by the audio it covered.",
    ["model"],
    buckets=RTF_BUCKETS,
)
dropped = Counter(
    "asrnode_dropped_items_total",
    "Items dropped before inference, by reason.",
    ["model", "reason"],
)
overloaded = Counter(
    "asrnode_overloaded_total", "Requests refused with 503 node_overloaded.", ["model"]
)
model_ready = Gauge("asrnode_model_ready", "1 once the model is loaded and warmed.", ["model"])
MODEL_STATES = ("loading", "warming", "ready", "failed")
model_state = Gauge(
    "asrnode_model_state",
    "1 for the model's current state (loading, warming, ready, failed), 0 for the others.",
    ["model", "state"],
)
queue_capacity = Gauge(
    "asrnode_queue_capacity",
    "Requests the model admits at once (INFERENCE_MAX_QUEUE); the next gets 503.",
    ["model"],
)
decode_failures = Counter(
    "asrnode_decode_failures_total", "Uploads that could not be decoded as audio."
)
gpu_memory_allocated = Gauge(
    "asrnode_gpu_memory_allocated_bytes", "CUDA memory held by tensors.", ["device"]
)
gpu_memory_reserved = Gauge(
    "asrnode_gpu_memory_reserved_bytes",
    "CUDA memory reserved by the caching allocator.",
    ["device"],
)


live_streams = Gauge(
    "asrnode_live_streams", "Live streams open on the model (online models).", ["model"]
)


def set_model_state(model: str, state: str) -> None:
    for each in MODEL_STATES:
        model_state.labels(model, each).set(1 if each == state else 0)
    model_ready.labels(model).set(1 if state == "ready" else 0)


def init_model(model: str, max_queue: int) -> None:
    """Every series of one model, at zero, before its first request."""
    set_model_state(model, "loading")
    queue_capacity.labels(model).set(max_queue)
    for gauge in (queue_depth, items_in_progress, requests_in_flight, live_streams):
        gauge.labels(model)
    for metric in (batch_size, engine_calls, inference_seconds, audio_seconds, real_time_factor):
        metric.labels(model)
    for outcome in ("ok", "error"):
        items.labels(model, outcome)
    dropped.labels(model, "client_gone")
    overloaded.labels(model)
