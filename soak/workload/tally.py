"""What soak saw each model answer since its load, held against what Triton's statistics
counted: Triton must have counted at least the successes and failures soak saw, and the
response cache's hits and insertions are read as the increase since the last look."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from soak.errors import ServerError
from soak.triton.facts import error_response_count
from soak.workload.composed import ENSEMBLE_MODEL
from soak.workload.repos import Behaviour

if TYPE_CHECKING:
    from soak.target.interface import ModelServer
    from soak.workload.record import LifecycleRecord

STATISTICS_SETTLE_S = 1.0  # how long a short statistics count is read again (see _counted)

Fail = Callable[[str, str], None]  # (phase, message)


class Tally:
    """Per loaded model, since its load: (successes, expected errors) soak saw, and the
    response cache's (hits, misses) Triton counted so far."""

    def __init__(self) -> None:
        self.answered: dict[str, tuple[int, int]] = {}
        self.cache_seen: dict[str, tuple[int, int]] = {}

    def loaded(self, model: str) -> None:
        """A fresh load: Triton's statistics for `model` start again from zero."""
        self.answered[model] = (0, 0)
        self.cache_seen[model] = (0, 0)

    def add(self, model: str, ok: int = 0, errors: int = 0) -> None:
        """More successes or expected errors of `model` since its load."""
        seen_ok, seen_errors = self.answered.get(model, (0, 0))
        self.answered[model] = (seen_ok + ok, seen_errors + errors)

    def check(
        self,
        server: ModelServer,
        models: list[str],
        behaviour: Behaviour,
        record: LifecycleRecord,
        fail: Fail,
        triton_version: str | None = None,
    ) -> None:
        """Triton must have counted at least the successes and failures soak saw since load,
        a python model's error responses counted as `triton_version` counts them."""
        for model in models:
            ok, errors = self.answered.get(model, (0, 0))
            # The ensemble scheduler counts an error response of its step as a failure in
            # every version; a python model's own is counted as the version counts it.
            how = "failure"
            if behaviour is Behaviour.ERROR_RESPONSE and model != ENSEMBLE_MODEL:
                how = error_response_count(triton_version)
            ok, errors, total = expected_statistics(ok, errors, how)
            counted = _counted(server, model, ok, errors, fail)
            if counted is None:
                continue
            success, failed, counts = counted
            self._count_cache(model, counts, record)
            if success < ok:
                fail("statistics", f"{model}: {success} successful inferences, expected {ok}")
            if failed < errors:
                fail("statistics", f"{model}: {failed} failed inferences, expected {errors}")
            if success >= ok and failed >= errors and success + failed < total:
                fail(
                    "statistics",
                    f"{model}: {success} successful and {failed} failed inferences, "
                    f"expected {total} in all",
                )

    def _count_cache(self, model: str, counts: list[dict], record: LifecycleRecord) -> None:
        """This iteration's response cache hits and misses (each miss inserts): the statistics
        count since the load, so the increase since the last look."""
        hits = sum(int(c.get("cache_hit", {}).get("count", 0)) for c in counts)
        misses = sum(int(c.get("cache_miss", {}).get("count", 0)) for c in counts)
        seen_hits, seen_misses = self.cache_seen.get(model, (0, 0))
        record.cache_hits += max(0, hits - seen_hits)
        record.cache_insertions += max(0, misses - seen_misses)
        self.cache_seen[model] = (hits, misses)


def expected_statistics(ok: int, errors: int, error_responses: str) -> tuple[int, int, int]:
    """(least successes, least failures, least of both together) for `ok` right answers and
    `errors` error responses, counted as `error_responses` says: 'failure', 'success' or
    'either' (soak.triton.facts.error_response_count of the server's version)."""
    if error_responses == "success":
        return ok + errors, 0, ok + errors
    if error_responses == "either":
        return ok, 0, ok + errors
    if error_responses == "failure":
        return ok, errors, ok + errors
    raise ValueError(
        f"error_responses is 'failure', 'success' or 'either', not {error_responses!r}"
    )


def _counted(
    server: ModelServer, model: str, ok: int, errors: int, fail: Fail
) -> tuple[int, int, list[dict]] | None:
    """(successes, failures, the statistics entries) Triton counted; None when it could
    not say (recorded). A tritonserver process counts a request after its response left
    (seen over HTTP: 9 of 10 right after the 10th answer), so a short count is read again
    for up to 1 s."""
    deadline = time.monotonic() + STATISTICS_SETTLE_S
    while True:
        try:
            stats = server.model_statistics(model)
        except ServerError as exc:
            fail("statistics", f"{model}: {exc.message}")
            return None
        counts = [e["inference_stats"] for e in stats.get("model_stats", [])]
        success = sum(int(c["success"]["count"]) for c in counts)
        failed = sum(int(c["fail"]["count"]) for c in counts)
        if (success >= ok and failed >= errors) or time.monotonic() > deadline:
            return success, failed, counts
        time.sleep(0.02)
