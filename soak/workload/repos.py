"""Write the model repositories of a run: a common one with `simple1`, one per instance.

Models are python-backend add/sub models (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 -
INPUT1, shape [1,16]). A behaviour says how a model fails on purpose, so that soak can soak
Triton's error paths: the failures it expects are counted, any other outcome is a failure.
Which requests fail is the client's choice (`FAIL_MARK` in INPUT0), so an error share is
deterministic from the seed and an unexpected success is visible.
"""

from __future__ import annotations

import shutil
from enum import Enum
from pathlib import Path


class Behaviour(str, Enum):
    CORRECT = "correct"
    EXECUTE_RAISES = "execute_raises"  # execute raises on each marked request
    ERROR_RESPONSE = "error_response"  # execute returns an error response on each marked request
    INIT_RAISES = "init_raises"  # every load fails
    STUB_LEAK = "stub_leak"  # the stub keeps STUB_LEAK_BYTES per request (correct results)
    WRONG_RESULT = "wrong_result"  # OUTPUT0 off by one (tests)
    SOMETIMES_WRONG = "sometimes_wrong"  # every 5th execute is off by one (tests)
    INIT_HANGS = "init_hangs"  # initialize sleeps for an hour: the load never returns (tests)


#: Behaviours a profile may ask for; the others exist to prove that soak catches bad models.
PROFILE_BEHAVIOURS = ("correct", "execute_raises", "error_response", "init_raises", "stub_leak")
#: Behaviours whose marked requests end in an error response.
ERROR_BEHAVIOURS = frozenset({Behaviour.EXECUTE_RAISES, Behaviour.ERROR_RESPONSE})
#: INPUT0[0, 0] of a request the model must fail; outside the range of ordinary inputs and
#: exact in int32 and fp32.
FAIL_MARK = 1_000_003
#: Every expected error message starts with this; any other error is a failure.
ERROR_TOKEN = "soak-expected-error"
DEFAULT_MESSAGE_CHARS = 100
#: What a `stub_leak` model keeps per request in its stub process: a page, written, so resident.
STUB_LEAK_BYTES = 4096

_TRITON_TYPES = {"int32": "TYPE_INT32", "fp32": "TYPE_FP32"}
_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}

_MODEL_PY = """\
import time

import triton_python_backend_utils as pb_utils

BEHAVIOUR = "{behaviour}"
FAIL_MARK = {fail_mark}
MESSAGE = "{token} " + "x" * {padding}
KEPT = []  # stub_leak: what this stub never gives back


class TritonPythonModel:
    def initialize(self, args):
        self.calls = 0
        if BEHAVIOUR == "init_raises":
            raise RuntimeError("{token}: initialize raised on purpose (soak test model)")
        if BEHAVIOUR == "init_hangs":
            time.sleep(3600)

    def execute(self, requests):
        responses = []
        for request in requests:
            self.calls += 1
            if BEHAVIOUR == "stub_leak":
                KEPT.append(bytearray(b"\x5a" * {stub_leak_bytes}))
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            marked = a.size > 0 and a.flat[0] == FAIL_MARK
            if marked and BEHAVIOUR == "execute_raises":
                raise RuntimeError(MESSAGE)
            if marked and BEHAVIOUR == "error_response":
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(MESSAGE)))
                continue
            total = a + b
            sometimes = BEHAVIOUR == "sometimes_wrong" and self.calls % 5 == 0
            if BEHAVIOUR == "wrong_result" or sometimes:
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
    message_chars: int = DEFAULT_MESSAGE_CHARS,
    version: int = 1,
    gpu_device: int = 0,
) -> Path:
    """One add/sub python model `<repository>/<name>/{config.pbtxt,<version>/model.py}`.

    Error messages are `message_chars` long: a leak on an error path grows with the message.
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
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
        f"input [ {tensors('INPUT')} ]\noutput [ {tensors('OUTPUT')} ]\n"
        f"instance_group [ {{ kind: {kind} count: 1{gpus} }} ]\n"
    )
    (model_dir / str(version) / "model.py").write_text(
        _MODEL_PY.format(
            behaviour=Behaviour(behaviour).value,
            fail_mark=FAIL_MARK,
            token=ERROR_TOKEN,
            padding=max(0, message_chars - len(ERROR_TOKEN) - 1),
            stub_leak_bytes=STUB_LEAK_BYTES,
        )
    )
    return model_dir


def write_new_version(model_dir: Path, version: int) -> None:
    """Make `version` the model's only version (a copy of the current one), so that the next
    load brings in a new version; the older ones are unloaded at this point."""
    current = sorted(
        (p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not current:
        raise FileNotFoundError(f"{model_dir}: no version folder to copy")
    target = model_dir / str(version)
    if current[-1] != target:
        shutil.copytree(current[-1], target, dirs_exist_ok=True)
    for old in current:
        if old != target:
            shutil.rmtree(old)


def own_model_name(instance: int) -> str:
    """Instance i owns `simple{i+2}`, as in Triton's multi-server test."""
    return f"simple{instance + 2}"


COMMON_MODEL = "simple1"


def write_repositories(
    root: Path,
    servers: int,
    datatype: str = "int32",
    instance_kind: str = "cpu",
    behaviour: Behaviour = Behaviour.CORRECT,
    message_chars: int = DEFAULT_MESSAGE_CHARS,
    gpu_device: int = 0,
) -> tuple[Path, list[Path]]:
    """The common repository and one unique repository per instance, under `root`."""
    common = root / "common"
    write_model(
        common,
        COMMON_MODEL,
        datatype,
        instance_kind,
        behaviour,
        message_chars,
        gpu_device=gpu_device,
    )
    unique = []
    for i in range(servers):
        repo = root / f"instance{i}"
        write_model(
            repo,
            own_model_name(i),
            datatype,
            instance_kind,
            behaviour,
            message_chars,
            gpu_device=gpu_device,
        )
        unique.append(repo)
    return common, unique
