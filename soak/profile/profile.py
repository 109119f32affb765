"""A loaded profile: its validated sections, the command-line overrides applied to it and the
cells of its matrix."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from soak.analysis.verdict import MetricRule
from soak.errors import ProfileError
from soak.profile.checks import check_run
from soak.profile.schema import RUN_KEYS
from soak.profile.sections import ATTRIBUTION_KEYS
from soak.profile.targets import check_attach


@dataclass(frozen=True)
class Profile:
    name: str
    source: str  # path or "<builtin>"
    text: str
    run: dict[str, Any]
    timeouts: dict[str, float]
    sampling: dict[str, Any]
    inject: dict[str, Any]
    thresholds: dict[str, MetricRule]
    matrix: dict[str, tuple] = field(default_factory=dict)
    cell: dict[str, Any] = field(default_factory=dict)  # values of this matrix cell
    overrides: dict[str, Any] = field(default_factory=dict)  # command-line flags applied
    # [models] (repositories as absolute paths) and [model.<name>] (input_data absolute).
    models: dict[str, Any] = field(default_factory=lambda: {"repositories": [], "load": []})
    model: dict[str, dict[str, Any]] = field(default_factory=dict)
    # [attribution]: allocation sites traced with memray (soak.sampling.memray_sites).
    attribution: dict[str, Any] = field(
        default_factory=lambda: {k.name: k.default for k in ATTRIBUTION_KEYS}
    )
    ray: dict[str, Any] = field(default_factory=lambda: {"resources": {}})  # [ray] section
    # [tritonserver]: extra flags of the server processes, or the url and pid of a server
    # soak attaches to (target tritonserver)
    tritonserver: dict[str, Any] = field(default_factory=lambda: {"args": [], "url": "", "pid": 0})

    @property
    def uses_gpu(self) -> bool:
        values = [self.run["memory_type"], self.run["instance_kind"]]
        for key in ("memory_type", "instance_kind"):
            values += list(self.matrix.get(key, ()))
        return (
            any(v in ("gpu", "pinned") for v in values)
            or self.inject.get("gpu_bytes_per_server", 0) > 0
        )

    def with_overrides(self, **values: Any) -> Profile:
        """Command-line overrides, validated like the file; None means not given.

        An error names the flag (``--servers``), not the file: the flag is what is wrong.
        """
        run = dict(self.run)
        keys = {k.name: k for k in RUN_KEYS}
        given = dict(self.overrides)
        for name, value in values.items():
            if value is None:
                continue
            run[name] = keys[name].check("", value, flag_name(name))
            given[name] = run[name]
        flags = " ".join(f"{flag_name(k)} {v}" for k, v in given.items())
        matrix = {k: v for k, v in self.matrix.items() if values.get(k) is None}
        where = f"{self.source} with {flags}" if flags else self.source
        check_run(where, run, matrix)
        check_attach(where, run, matrix, self.tritonserver, self.models)
        return replace(self, run=run, matrix=matrix, overrides=given)

    def with_tritons(self, versions: tuple[str, ...]) -> Profile:
        """`--triton V` (repeatable): one value sets `triton`, several make the matrix's
        `triton` axis (replacing the file's); every other axis stays."""
        if not versions:
            return self
        key = {k.name: k for k in RUN_KEYS}["triton"]
        checked = tuple(key.check("", v, "--triton") for v in versions)
        if len(set(checked)) != len(checked):
            raise ProfileError(f"--triton names {', '.join(checked)}: each version once")
        run, matrix = dict(self.run), dict(self.matrix)
        matrix.pop("triton", None)
        if len(checked) == 1:
            run["triton"] = checked[0]
        else:
            run["triton"] = ""
            matrix["triton"] = checked
        flags = " ".join(f"--triton {v}" for v in checked)
        check_run(f"{self.source} with {flags}", run, matrix)
        return replace(
            self, run=run, matrix=matrix, overrides={**self.overrides, "triton": list(checked)}
        )

    def with_attach(self, url: str | None, pid: int | None) -> Profile:
        """`--url URL --pid N`: soak the tritonserver at URL (process N) that someone else
        started; sets target = 'tritonserver', checked like the file's keys, naming the flags."""
        if url is None and pid is None:
            return self
        server = dict(self.tritonserver)
        given = dict(self.overrides)
        labels = {}
        if url is not None:
            server["url"], given["url"], labels["url"] = url, url, "--url"
        if pid is not None:
            if pid <= 0:
                raise ProfileError(f"--pid {pid} is not a process id")
            server["pid"], given["pid"], labels["pid"] = pid, pid, "--pid"
        for key in ("url", "pid"):  # one not given: either way of giving it is named
            labels.setdefault(key, f"--{key} (or tritonserver.{key})")
        run = {**self.run, "target": "tritonserver"} if server.get("url") else self.run
        flags = " ".join(f"{flag_name(k)} {v}" for k, v in given.items())
        where = f"{self.source} with {flags}"
        check_run(where, run, self.matrix)
        check_attach(where, run, self.matrix, server, self.models, labels)
        return replace(self, run=run, tritonserver=server, overrides=given)

    @property
    def attached(self) -> bool:
        """Whether the run soaks a tritonserver someone else started ([tritonserver] url)."""
        return bool(self.tritonserver.get("url"))

    def with_attribution(self) -> Profile:
        """`--attribute`: allocation sites traced whatever the profile says."""
        return replace(
            self,
            attribution={**self.attribution, "enabled": True},
            overrides={**self.overrides, "attribute": True},
        )

    @property
    def matrix_tags(self) -> dict[str, Any]:
        """What a cell's run row records of its matrix (nothing for a run outside one)."""
        return {"matrix": self.name, "cell": self.cell} if self.cell else {}

    def cells(self) -> list[Profile]:
        """One profile per matrix cell (itself when it has no matrix)."""
        if not self.matrix:
            return [self]
        names = list(self.matrix)
        out = []
        for combo in itertools.product(*(self.matrix[n] for n in names)):
            cell = dict(zip(names, combo, strict=False))
            out.append(replace(self, run={**self.run, **cell}, matrix={}, cell=cell))
        return out


def flag_name(name: str) -> str:
    """The command-line flag of a run key (`servers` -> `--servers`), as errors name it."""
    return f"--{name.replace('_', '-')}"
