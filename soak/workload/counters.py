"""A server's own request counters (tritonserver's Prometheus /metrics) checked against what
soak counted: per model, the successes and failures since the last look must equal soak's, and
nothing may be pending once a burst is over.

Read at the end of each burst (the statistics phase: every response is in, nothing in flight;
in the traffic scenario that is the quiet point, in reload and servers the models unload before
the quiet point). The counters can lag the response that was already received (seen: /metrics
one behind in 1 of 200 calls), so a short count is read again for up to `SETTLE_S` before it is
called a mismatch. In-process there is no /metrics: nothing is read, the columns stay NULL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from soak.errors import ServerError
from soak.target.interface import ModelServer
from soak.triton.facts import error_response_count
from soak.workload.repos import Behaviour

if TYPE_CHECKING:
    from soak.workload.record import LifecycleRecord

SETTLE_S = 1.0
_PAUSE_S = 0.02


@dataclass
class Counted:
    """What /metrics counted over some models since the last look (pending: at the look)."""

    successes: int = 0
    failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # failures by reason (BACKEND, ...)
    pending: int = 0

    def add(self, other: Counted) -> None:
        self.successes += other.successes
        self.failures += other.failures
        self.pending += other.pending
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n


def _since(now: Any, seen: Any) -> Counted:
    reasons = {
        r: n - (seen.failure.get(r, 0) if seen else 0)
        for r, n in now.failure.items()
        if n - (seen.failure.get(r, 0) if seen else 0)
    }
    return Counted(
        now.success - (seen.success if seen else 0),
        now.failures - (seen.failures if seen else 0),
        reasons,
        now.pending,
    )


class CounterCheck:
    """One server's counters as last seen, per model; `baseline` after a load, `check` after
    a burst."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def baseline(self, server: ModelServer, models: list[str]) -> None:
        """The counters of freshly loaded `models`, so the next check counts from here."""
        counters = server.request_counters()
        if counters is None:
            return
        for model in models:
            self.seen[model] = counters.get(model)

    def check(
        self,
        server: ModelServer,
        models: list[str],
        expected: dict[str, tuple[int, int]],
        fail: Callable[[str], None],
    ) -> Counted | None:
        """What /metrics counted for `models` since the last look (None: no /metrics).
        `expected` maps the models soak judges to its (successes, failures); each mismatch,
        or a pending request, is one `fail` line naming the model and both counts."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            try:
                counters = server.request_counters()
            except ServerError as exc:
                fail(f"/metrics: {exc.message}")
                return None
            if counters is None:
                return None
            counted = {m: _since(counters[m], self.seen.get(m)) for m in models if m in counters}
            wrong = {
                m: c
                for m, c in counted.items()
                if m in expected and ((c.successes, c.failures) != expected[m] or c.pending)
            }
            missing = [m for m in expected if m not in counted]
            if (not wrong and not missing) or time.monotonic() > deadline:
                break
            time.sleep(_PAUSE_S)
        for model, c in wrong.items():
            ok, errors = expected[model]
            fail(
                f"{model}: /metrics counted {c.successes} successes, {c.failures} failures, "
                f"{c.pending} pending; soak counted {ok} successes, {errors} failures"
            )
        for model in missing:
            fail(f"{model}: /metrics has no counters for it; soak counted {expected[model]}")
        for model in models:
            if model in counters:
                self.seen[model] = counters[model]
        total = Counted()
        for c in counted.values():
            total.add(c)
        return total


def judged_models(
    record: LifecycleRecord,
    generated: list[str],
    loaded: list[str],
    behaviour: Behaviour,
    composed: bool = False,
    triton_version: str | None = None,
) -> dict[str, tuple[int, int]]:
    """Soak's (successes, failures) this iteration for each generated model the counters are
    held to. None with composed models (ensemble and BLS steps are requests of the add/sub
    model too) or after a failed inference (the burst stopped with requests in flight).
    A python model's error response is expected as `triton_version` counts it (/metrics
    follows the statistics: a failure in 2.43, a success in 2.51); where the version's way
    is not known the model is not held to an exact count."""
    if composed or any(f.phase == "infer" for f in record.failures):
        return {}
    how = error_response_count(triton_version) if behaviour is Behaviour.ERROR_RESPONSE else ""
    judged = {}
    for model in generated:
        if model in loaded and how != "either":
            ok, errors = record.per_model.get(model, (0, 0))
            if how == "success":
                ok, errors = ok + errors, 0
            judged[model] = (ok, errors)
    return judged
