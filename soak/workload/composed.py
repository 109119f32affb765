"""Generated models built over the common add/sub model: an ensemble and a BLS model.

Both keep the add/sub model's inputs and outputs, so the lifecycle sends and checks them as
it does the add/sub model, and a behaviour's failures reach the client through them: the
ensemble scheduler and the python backend's BLS (a model calling another from Python) are
then exercised by every scenario. They live in the common repository beside `simple1`.
"""

from __future__ import annotations

from pathlib import Path

from soak.workload.repos import COMMON_MODEL, Behaviour

ENSEMBLE_MODEL = f"{COMMON_MODEL}_ensemble"
BLS_MODEL = f"{COMMON_MODEL}_bls"

_BLS_PY = """\
import triton_python_backend_utils as pb_utils

MODE = "{mode}"
TARGET = "{target}"
RAISES = {raises}  # fail as the callee does: raise (execute_raises), else an error response


class TritonPythonModel:
    def _request(self, request):
        inputs = [pb_utils.get_input_tensor_by_name(request, n) for n in ("INPUT0", "INPUT1")]
        return pb_utils.InferenceRequest(
            model_name=TARGET, requested_output_names=["OUTPUT0", "OUTPUT1"], inputs=inputs
        )

    @staticmethod
    def _response(inner):
        if inner.has_error() and RAISES:
            raise RuntimeError(inner.error().message())
        if inner.has_error():
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(inner.error().message()))
        names = ("OUTPUT0", "OUTPUT1")
        tensors = [pb_utils.get_output_tensor_by_name(inner, n) for n in names]
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(n, t.as_numpy()) for n, t in zip(names, tensors)]
        )
{execute}
"""

_SYNC_EXECUTE = """
    def execute(self, requests):
        return [self._response(self._request(r).exec()) for r in requests]
"""

_ASYNC_EXECUTE = """
    async def execute(self, requests):
        import asyncio

        inner = await asyncio.gather(*(self._request(r).async_exec() for r in requests))
        return [self._response(i) for i in inner]
"""


def _io(ttype: str) -> str:
    tensors = lambda prefix: ", ".join(  # noqa: E731
        f'{{ name: "{prefix}{i}" data_type: {ttype} dims: [ 1, 16 ] }}' for i in (0, 1)
    )
    return f"input [ {tensors('INPUT')} ]\noutput [ {tensors('OUTPUT')} ]\n"


def write_ensemble(repository: Path, ttype: str) -> str:
    """An ensemble of one step, the add/sub model, each tensor mapped to itself."""
    model_dir = repository / ENSEMBLE_MODEL
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    maps = lambda kind, prefix: " ".join(  # noqa: E731
        f'{kind} {{ key: "{prefix}{i}" value: "{prefix}{i}" }}' for i in (0, 1)
    )
    (model_dir / "config.pbtxt").write_text(
        f'name: "{ENSEMBLE_MODEL}"\nplatform: "ensemble"\nmax_batch_size: 0\n{_io(ttype)}'
        "ensemble_scheduling { step [ { "
        f'model_name: "{COMMON_MODEL}" model_version: -1 '
        f"{maps('input_map', 'INPUT')} {maps('output_map', 'OUTPUT')} }} ] }}\n"
    )
    return ENSEMBLE_MODEL


def write_bls(repository: Path, ttype: str, mode: str, raises: bool = False) -> str:
    """A python model that sends each request on to the add/sub model, exec() or async_exec();
    a CPU instance whatever instance_kind says (its callee has that kind)."""
    model_dir = repository / BLS_MODEL
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(
        f'name: "{BLS_MODEL}"\nbackend: "python"\nmax_batch_size: 0\n{_io(ttype)}'
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )
    execute = _ASYNC_EXECUTE if mode == "async" else _SYNC_EXECUTE
    (model_dir / "1" / "model.py").write_text(
        _BLS_PY.format(mode=mode, target=COMMON_MODEL, raises=raises, execute=execute)
    )
    return BLS_MODEL


def write_composed(
    common: Path, ensemble: bool, bls: str, behaviour: Behaviour = Behaviour.CORRECT
) -> tuple[str, ...]:
    """The composed models a profile asks for, written beside the add/sub model; their names.
    Triton counts an error response as a success and a raise as a failure, so the BLS model
    fails the way the behaviour makes the add/sub model fail."""
    ttype = _config_type(common / COMMON_MODEL / "config.pbtxt")
    names = []
    if ensemble:
        names.append(write_ensemble(common, ttype))
    if bls != "off":
        raises = behaviour is Behaviour.EXECUTE_RAISES
        names.append(write_bls(common, ttype, bls, raises))
    return tuple(names)


def _config_type(config: Path) -> str:
    text = config.read_text()
    return "TYPE_FP32" if "TYPE_FP32" in text else "TYPE_INT32"
