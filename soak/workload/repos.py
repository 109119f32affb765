"""Write the model repositories of a run: a common one with `simple1`, one per instance.

Models are python-backend add/sub models (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 -
INPUT1, shape [1,16]); a behaviour other than "correct" makes a deliberately faulty model
for the tests that prove soak catches bad numbers, failing and hanging loads.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path


class Behaviour(str, Enum):
    CORRECT = "correct"
    WRONG_RESULT = "wrong_result"  # OUTPUT0 off by one
    SOMETIMES_WRONG = "sometimes_wrong"  # every 5th execute is off by one
    INIT_RAISES = "init_raises"
    INIT_HANGS = "init_hangs"  # initialize sleeps for an hour: the load never returns


_TRITON_TYPES = {"int32": "TYPE_INT32", "fp32": "TYPE_FP32"}
_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}

_MODEL_PY = """\
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.calls = 0
        behaviour = "{behaviour}"
        if behaviour == "init_raises":
            raise RuntimeError("initialize raised on purpose (soak test model)")
        if behaviour == "init_hangs":
            time.sleep(3600)

    def execute(self, requests):
        responses = []
        for request in requests:
            self.calls += 1
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            total = a + b
            if "{behaviour}" == "wrong_result" or (
                "{behaviour}" == "sometimes_wrong" and self.calls % 5 == 0
            ):
                total = total + 1
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT0", total), pb_utils.Tensor("OUTPUT1", a - b)]
                )
            )
        return responses
"""


def write_model(
    repository: Path,
    name: str,
    datatype: str = "int32",
    instance_kind: str = "cpu",
    behaviour: Behaviour = Behaviour.CORRECT,
    gpu_device: int = 0,
) -> Path:
    """One add/sub python model `<repository>/<name>/{config.pbtxt,1/model.py}`.

    A KIND_GPU instance is pinned to `gpu_device`: without `gpus:` Triton makes one instance
    per visible GPU, so a multi-GPU host would run more stubs than the profile says.
    """
    ttype = _TRITON_TYPES[datatype]
    kind = _KINDS[instance_kind]
    gpus = f" gpus: [ {gpu_device} ]" if instance_kind == "gpu" else ""
    tensors = lambda prefix: ", ".join(  # noqa: E731
        f'{{ name: "{prefix}{i}" data_type: {ttype} dims: [ 1, 16 ] }}' for i in (0, 1)
    )
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
        f"input [ {tensors('INPUT')} ]\noutput [ {tensors('OUTPUT')} ]\n"
        f"instance_group [ {{ kind: {kind} count: 1{gpus} }} ]\n"
    )
    (model_dir / "1" / "model.py").write_text(
        _MODEL_PY.format(behaviour=Behaviour(behaviour).value)
    )
    return model_dir


def own_model_name(instance: int) -> str:
    """Instance i owns `simple{i+2}`, as in Triton's multi-server test."""
    return f"simple{instance + 2}"


COMMON_MODEL = "simple1"


def write_repositories(
    root: Path,
    servers: int,
    datatype: str = "int32",
    instance_kind: str = "cpu",
    gpu_device: int = 0,
) -> tuple[Path, list[Path]]:
    """The common repository and one unique repository per instance, under `root`."""
    common = root / "common"
    write_model(common, COMMON_MODEL, datatype, instance_kind, gpu_device=gpu_device)
    unique = []
    for i in range(servers):
        repo = root / f"instance{i}"
        write_model(repo, own_model_name(i), datatype, instance_kind, gpu_device=gpu_device)
        unique.append(repo)
    return common, unique
