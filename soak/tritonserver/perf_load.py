"""perf_analyzer as the load generator of a tritonserver: a burst of `ModelServer.infer_many` is
one `perf_analyzer --request-count N` run with the client's protocol, concurrency, shared
memory and streaming, fed soak's own inputs and expected outputs (--input-data with
validation_data), so perf_analyzer checks every answer the way soak's generator does; not
with shared memory, where its check fails every correct answer (2.51): those are counted and
handed on as NOT_CHECKED.

What it can say back is coarser than soak's own client: a burst that exits 0 completed every
request it counted, each answer equal to soak's expected one; perf_analyzer ends at the first
failed request (2.51) and prints no counts then, so a failed burst hands on one error per
perf_analyzer thread that reported one, and nothing else.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soak.target.interface import NOT_CHECKED, MemoryType, OnResult, Output
from soak.triton.returns import InferenceTimeout, TritonError
from soak.tritonserver import perf_analyzer

#: How much of perf_analyzer's output a failure keeps (its end: the errors are printed last).
OUTPUT_KEPT_CHARS = 4000

_files = itertools.count()


@dataclass
class PerfAnalyzerLoad:
    """Bursts against the server at `url` (its `protocol` endpoint); `env` from
    soak.tritonserver.executable.perf_analyzer_environment; input data files in `workdir`."""

    url: str
    protocol: str
    streaming: bool
    shared_memory: str
    env: dict[str, str]
    workdir: Path

    def infer_many(
        self,
        model: str,
        inputs: Iterable[dict[str, np.ndarray]],
        outputs: list[str],
        on_result: OnResult,
        concurrency: int = 1,
        timeout_s: float = 30.0,
        expected: Callable[[int], dict[str, np.ndarray] | None] | None = None,
    ) -> int:
        """One perf_analyzer run of every request of `inputs`; results handed on as
        `ModelServer.infer_many` does: a completed request with the outputs perf_analyzer
        checked (soak's expected ones), a failure as a TritonError with perf_analyzer's
        message. InferenceTimeout (the run killed) when it overran `timeout_s`, the infer
        phase's timeout, which the supervisor's watchdog holds the whole phase to anyway."""
        items = list(inputs)
        if not items:
            return 0
        wanted = [expected(i) if expected is not None else None for i in range(len(items))]
        # perf_analyzer 2.51 fails every correct answer that came through shared memory
        # ("Output size doesn't match expected size"): those go unchecked.
        checked = self.shared_memory == "none" and all(w is not None for w in wanted)
        path = self.workdir / f"perf-input-{os.getpid()}-{next(_files)}.json"
        perf_analyzer.write_input_data(path, items, wanted if checked else None)  # type: ignore[arg-type]
        budget = timeout_s  # the infer phase's: the supervisor's watchdog holds it too
        try:
            done = perf_analyzer.burst(
                model,
                self.url,
                self.protocol,
                concurrency,
                len(items),
                self.env,
                budget,
                self.shared_memory,
                self.streaming,
                input_data=path,
            )
        finally:
            path.unlink(missing_ok=True)
        if done.timed_out:
            printed = done.output.strip()[-OUTPUT_KEPT_CHARS:] or "(nothing)"
            raise InferenceTimeout(
                "soak",
                f"perf_analyzer burst of {len(items)} on {model!r} ran past {budget:g} s; "
                f"what it printed (last {OUTPUT_KEPT_CHARS} characters):\n{printed}",
            )
        if done.ok:
            handed = 0
            for index in range(done.completed):
                answer = wanted[index]
                result = (
                    {n: Output(a, MemoryType.SYSTEM) for n, a in answer.items()}
                    if checked and answer is not None
                    else NOT_CHECKED
                )
                handed += 1
                if not on_result(index, result, None):
                    break
            return handed
        errors = perf_analyzer.thread_errors(done.output) or [f"exited {done.returncode}"]
        tail = done.output[-OUTPUT_KEPT_CHARS:]
        handed = 0
        for index, message in enumerate(errors):
            error = TritonError(
                "Unknown",
                f"perf_analyzer (exit {done.returncode}): {message}\nperf_analyzer output "
                f"(last {OUTPUT_KEPT_CHARS} characters):\n{tail}",
            )
            handed += 1
            if not on_result(index, None, error):
                break
        return handed
