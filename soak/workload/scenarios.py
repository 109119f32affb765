"""The scenarios: what one iteration does, what its quiet point holds, which units it has.

- servers: N servers created, exercised and deleted in every iteration (Triton's multi-server
  test); the quiet point has no server.
- reload: N servers live from iteration 1 to the end; every iteration loads the models on
  each, runs the inferences, unloads them and waits until the model index says unloaded; the
  quiet point has live servers and no loaded model. With `reload_new_version` each load
  brings a new version (k + 1 in iteration k).
- traffic: N servers with their models loaded once; each iteration is a burst of
  `inferences_per_model` requests per model; the quiet point has loaded models and nothing
  in flight.
Long-lived servers are deleted by `close()`, once, also after a run stopped early.
"""

from __future__ import annotations

import logging
from pathlib import Path

from soak.workload.iteration import IterationRecord, Workload, WorkloadConfig
from soak.workload.lifecycle import Lifecycle
from soak.workload.record import Failure, PhaseObserver
from soak.workload.repos import COMMON_MODEL, own_model_name, write_new_version

log = logging.getLogger(__name__)


class Servers(Workload):
    """The seed scenario: every iteration creates N servers, runs their whole lifecycles
    released together, and deletes them; nothing outlives an iteration."""

    def run_iteration(self, index: int) -> IterationRecord:
        lives = [
            Lifecycle(self.lifecycle_config(i, index), self.observer, self.leaker)
            for i in range(self.config.servers)
        ]
        return self.concurrently(index, lives, Lifecycle.run)

    def close(self) -> list[Failure]:
        return []


class _LongLived(Workload):
    """Servers that outlive iterations: opened in the first iteration, closed by close()."""

    load_once = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lives: list[Lifecycle] | None = None

    def run_iteration(self, index: int) -> IterationRecord:
        first = self.lives is None
        if self.lives is None:
            self.lives = [
                Lifecycle(self.lifecycle_config(i, 0), self.observer, self.leaker)
                for i in range(self.config.servers)
            ]
        version = self.prepare(index)

        def step(life: Lifecycle) -> None:
            life.begin_iteration()
            if first:
                life.open(load=self.load_once)
            life.exercise(load=not self.load_once, unload=not self.load_once, version=version)

        return self.concurrently(index, self.lives, step)

    def prepare(self, index: int) -> int | None:
        """Before the threads of iteration `index` start; the model version to expect."""
        return None

    def close(self) -> list[Failure]:
        """Unload, stop and delete every server in parallel, once. A server whose unload or
        stop hangs (recorded as a failure) is left to the end of the process."""
        lives, self.lives = self.lives or [], None
        for life in lives:
            life.begin_iteration()
        self.in_threads(lives, Lifecycle.close)
        return [f for life in lives for f in life.record.failures]


class Reload(_LongLived):
    def prepare(self, index: int) -> int | None:
        if not self.config.reload_new_version:
            return None
        version = index + 2  # iteration k (from 1) loads version k + 1
        dirs = [self.common / COMMON_MODEL]
        dirs += [repo / own_model_name(i) for i, repo in enumerate(self.unique)]
        for model_dir in dirs:
            write_new_version(model_dir, version)
        return version


class Traffic(_LongLived):
    load_once = True


def make_workload(
    config: WorkloadConfig,
    workdir: Path,
    backends_dir: Path,
    log_file: Path | None = None,
    observer: PhaseObserver | None = None,
) -> Workload:
    """The workload of `config.scenario`; call its close() once after the last iteration."""
    kinds = {"servers": Servers, "reload": Reload, "traffic": Traffic}
    return kinds[config.scenario](config, workdir, backends_dir, log_file, observer)
