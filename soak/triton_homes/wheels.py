"""Which `nvidia-pytriton` wheel carries which Triton core, and fetching one with pip.

The table picks a candidate wheel only; the core's own `TRITONSERVER_ServerMetadata` decides
what was installed (pytriton's changelog said 0.5.0 carried 2.42; its library says 2.41.0).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from soak.errors import EnvironmentProblem, ProfileError

log = logging.getLogger(__name__)

PACKAGE = "nvidia-pytriton"

#: Triton core version -> the nvidia-pytriton release that carries it, read from every
#: release's library here (x86_64, each wheel unpacked and asked). Where several releases
#: carry one core (2.51.0: 0.5.13, 0.5.14, 0.6.0, 0.7.0) the newest is named. Cores before
#: 2.42 lack TRITONSERVER_ServerOptionsSetModelLoadRetryCount, which soak's binding needs.
CORES: dict[str, str] = {
    "2.28.0": "0.1.5",
    "2.33.0": "0.2.5",
    "2.36.0": "0.4.0",
    "2.39.0": "0.4.2",
    "2.41.0": "0.5.0",
    "2.42.0": "0.5.2",
    "2.43.0": "0.5.3",
    "2.44.0": "0.5.6",
    "2.45.0": "0.5.7",
    "2.46.0": "0.5.8",
    "2.47.0": "0.5.9",
    "2.48.0": "0.5.10",
    "2.49.0": "0.5.11",
    "2.50.0": "0.5.12",
    "2.51.0": "0.7.0",
}

_TRITON = re.compile(r"^\d+\.\d+(\.\d+)?$")
_PYTRITON = re.compile(r"^(nvidia-)?pytriton==(\d+\.\d+\.\d+)$")


@dataclass(frozen=True)
class WheelChoice:
    """What to fetch for one request: the pytriton release, and the core it should carry
    (None when the user named the pytriton release: then the library says)."""

    pytriton: str
    expected_triton: str | None


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def known_versions() -> list[str]:
    """The Triton versions `soak triton install` knows a wheel for, oldest first."""
    return sorted(CORES, key=version_key)


def choose(spec: str) -> WheelChoice:
    """`2.43.0` (or `2.43`) -> the wheel that carries it; `pytriton==0.5.3` -> that wheel."""
    text = spec.strip()
    named = _PYTRITON.match(text)
    if named:
        return WheelChoice(named.group(2), None)
    if not _TRITON.match(text):
        raise ProfileError(
            f"{spec!r} is neither a Triton version (such as 2.43.0) nor pytriton==X.Y.Z"
        )
    version = text if text.count(".") == 2 else f"{text}.0"
    if version not in CORES:
        raise ProfileError(
            f"no {PACKAGE} wheel carries Triton {version}; versions that exist: "
            f"{', '.join(known_versions())} (or name a wheel: pytriton==X.Y.Z)"
        )
    return WheelChoice(CORES[version], version)


def cached_wheel(wheels: Path, pytriton: str) -> Path | None:
    """A wheel of that release already downloaded into `wheels`, if any."""
    found = sorted(wheels.glob(f"nvidia_pytriton-{pytriton}-*.whl"))
    return found[-1] if found else None


def fetch(pytriton: str, wheels: Path, timeout_s: float = 600.0) -> Path:
    """The wheel of `nvidia-pytriton==pytriton` for this machine, downloaded by the running
    interpreter's pip into `wheels` unless it is there already (then no network is needed)."""
    have = cached_wheel(wheels, pytriton)
    if have is not None:
        return have
    wheels.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(wheels),
        f"{PACKAGE}=={pytriton}",
    ]
    log.info("running %s", " ".join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentProblem(
            f"pip did not fetch {PACKAGE}=={pytriton} within {timeout_s:.0f} s"
        ) from exc
    have = cached_wheel(wheels, pytriton)
    if done.returncode == 0 and have is not None:
        return have
    raise _pip_failure(pytriton, done.stdout + done.stderr, wheels)


_UNREACHABLE = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Max retries exceeded",
    "Read timed out",
    "No route to host",
)


class IndexUnreachable(EnvironmentProblem):
    """pip saw no nvidia-pytriton at all, and no wheel was cached: offline, most likely."""


def _pip_failure(pytriton: str, output: str, wheels: Path) -> EnvironmentProblem:
    """pip's failure as one sentence: unreachable index, unknown release, or its last line."""
    if "No module named pip" in output:
        return EnvironmentProblem(f"{sys.executable} has no pip to fetch {PACKAGE}=={pytriton}")
    offered = re.search(r"\(from versions: ([^)]*)\)", output)
    # The package exists on PyPI: seeing none of its releases means pip reached no index
    # (with --retries 0 pip prints no connection error at all, only this).
    if any(marker in output for marker in _UNREACHABLE) or (
        offered is not None and offered.group(1).strip() == "none"
    ):
        return IndexUnreachable(
            f"cannot reach the package index to fetch {PACKAGE}=={pytriton} (pip found no "
            f"release of it), and no such wheel is cached in {wheels}"
        )
    if offered is not None:
        return EnvironmentProblem(
            f"pip has no {PACKAGE}=={pytriton} for this machine (it offers: "
            f"{offered.group(1).strip()})"
        )
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    last = lines[-1] if lines else "no output"
    return EnvironmentProblem(f"pip could not fetch {PACKAGE}=={pytriton}: {last}")
