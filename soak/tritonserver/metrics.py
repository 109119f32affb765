"""Read tritonserver's Prometheus text (/metrics) into per-model counters.

On CPU it has 15 families; none is per-process memory, but the request counters are exact
(failures by reason matched the failed requests), so soak checks them against its own counts.
"""

from __future__ import annotations

import re
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (comments and blank lines skipped)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples.append(Sample(name, dict(_LABEL.findall(labels or "")), number))
    return samples


@dataclass
class ModelCounters:
    """One model's request counters, summed over its versions."""

    success: int = 0
    failure: dict[str, int] = field(default_factory=dict)  # by reason (OTHER, BACKEND, ...)
    inferences: int = 0  # nv_inference_count
    executions: int = 0  # nv_inference_exec_count
    pending: int = 0  # nv_inference_pending_request_count (a gauge)

    @property
    def failures(self) -> int:
        return sum(self.failure.values())


_FIELDS = {
    "nv_inference_request_success": "success",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_pending_request_count": "pending",
}


def per_model(samples: list[Sample]) -> dict[str, ModelCounters]:
    """The request counters of each model that has any."""
    models: dict[str, ModelCounters] = defaultdict(ModelCounters)
    for sample in samples:
        model = sample.labels.get("model")
        if model is None:
            continue
        counters = models[model]
        if sample.name == "nv_inference_request_failure":
            reason = sample.labels.get("reason", "")
            counters.failure[reason] = counters.failure.get(reason, 0) + int(sample.value)
        elif sample.name in _FIELDS:
            attr = _FIELDS[sample.name]
            setattr(counters, attr, getattr(counters, attr) + int(sample.value))
    return dict(models)


def fetch(url: str, timeout_s: float = 5.0) -> str:
    """The text at `url` (http://127.0.0.1:PORT/metrics)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        return reply.read().decode("utf-8", errors="replace")


def read(url: str, timeout_s: float = 5.0) -> dict[str, ModelCounters]:
    """Fetch and parse: per-model counters now."""
    return per_model(parse(fetch(url, timeout_s)))
