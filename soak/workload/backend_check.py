"""Before any server: which backend a user's model needs, and whether the install has it, so
that a missing backend is one line naming the model rather than a failed load per lifecycle."""

from __future__ import annotations

import re
from pathlib import Path

# Platforms that name no backend in their config, and the backend that serves them.
_PLATFORM_BACKENDS = {
    "tensorrt_plan": "tensorrt",
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
}


def model_dir(repositories: tuple[Path, ...], name: str) -> Path | None:
    return next((r / name for r in repositories if (r / name).is_dir()), None)


def backend_of(config_file: Path) -> str | None:
    """The backend a config.pbtxt names (or its platform implies); None when it says neither."""
    try:
        text = config_file.read_text()
    except OSError:
        return None
    found = re.search(r'^\s*backend\s*:\s*"([^"]+)"', text, re.MULTILINE)
    if found:
        return found.group(1)
    platform = re.search(r'^\s*platform\s*:\s*"([^"]+)"', text, re.MULTILINE)
    return _PLATFORM_BACKENDS.get(platform.group(1)) if platform else None


def backend_problem(repositories: tuple[Path, ...], name: str, backends_dir: Path) -> str | None:
    """Why a model cannot load for want of its backend, in one line; None when it is there."""
    where = model_dir(repositories, name)
    backend = backend_of(where / "config.pbtxt") if where else None
    if backend is None or (Path(backends_dir) / backend).is_dir():
        return None
    have = (
        sorted(p.name for p in Path(backends_dir).iterdir() if p.is_dir())
        if Path(backends_dir).is_dir()
        else []
    )
    return (
        f"model {name!r} needs the {backend!r} backend, which is not in the backends folder "
        f"{backends_dir} (it has: {', '.join(have) or 'nothing'}); point triton_home at a "
        "Triton install that has it, such as /opt/tritonserver in NVIDIA's containers"
    )
