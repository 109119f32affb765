"""Pythonic wrappers over the TRITONSERVER C API: options, servers, models, inference.

Every Triton object has exactly one owner that frees it exactly once. A request is deleted
only after its release callback reported RELEASE_ALL, and a response only after its outputs
were copied out: the python backend releases requests late, and deleting them early (as
Triton's own multi-server test does) crashes about one server instance in four.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from ctypes import byref, c_bool, c_char_p, c_int, c_int64, c_size_t, c_uint32, c_uint64, c_void_p
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soak.errors import ServerError, ServerTimeout
from soak.target.interface import MemoryType, Output
from soak.triton import capi, tensors
from soak.triton import memory as mem

log = logging.getLogger(__name__)


class TritonError(ServerError):
    """A TRITONSERVER_Error, with Triton's own code name and message."""


class InferenceTimeout(TritonError, ServerTimeout):
    """No final response (or no request release) within the timeout."""


def _lib() -> ctypes.CDLL:
    return capi.loaded().lib


def _take_error(err: int | None) -> TritonError | None:
    """Copy a returned TRITONSERVER_Error into Python and delete it: every error a C API call
    returns is the caller's (TRITONSERVER_InferenceResponseError's included)."""
    if not err:
        return None
    lib = _lib()
    code = (lib.TRITONSERVER_ErrorCodeString(err) or b"?").decode()
    message = (lib.TRITONSERVER_ErrorMessage(err) or b"").decode(errors="replace")
    lib.TRITONSERVER_ErrorDelete(err)
    return TritonError(code, message)


def check(err: int | None) -> None:
    error = _take_error(err)
    if error is not None:
        raise error


def _message_json(message: c_void_p) -> object:
    lib = _lib()
    base, size = c_char_p(), c_size_t()
    try:
        check(lib.TRITONSERVER_MessageSerializeToJson(message, byref(base), byref(size)))
        raw = ctypes.string_at(base, size.value)
    finally:
        lib.TRITONSERVER_MessageDelete(message)
    return json.loads(raw)


@dataclass(frozen=True)
class ServerOptions:
    """What one server is built from; plain data, turned into TRITONSERVER options per server."""

    repositories: tuple[Path, ...]
    backends_dir: Path
    server_id: str = "soak"
    strict_readiness: bool = True
    strict_model_config: bool = True
    exit_timeout_s: int = 30
    model_load_retry_count: int = 0
    log_file: Path | None = None
    log_verbose: int = 0
    metrics: bool = False
    min_compute_capability: float | None = None
    pinned_pool_bytes: int | None = None
    serialize_new_delete: bool = True  # see _NEW_DELETE
    # The response cache: "" none, else a cache library's name ("local") with its JSON
    # config (local: {"size": bytes}); its folder defaults to the install's caches/.
    cache: str = ""
    cache_config: str = "{}"
    cache_dir: Path | None = None


def _set_cache(lib: ctypes.CDLL, opts: c_void_p, options: ServerOptions) -> None:
    """The response cache: its library folder (the install's caches/ beside backends/) and
    config; a core without the cache options cannot have one."""
    if not capi.has("TRITONSERVER_ServerOptionsSetCacheConfig"):
        raise TritonError("soak", "this Triton core has no response cache options (before 2.30)")
    folder = options.cache_dir or capi.loaded().install.backends_dir.parent / "caches"
    check(lib.TRITONSERVER_ServerOptionsSetCacheDirectory(opts, str(folder).encode()))
    check(
        lib.TRITONSERVER_ServerOptionsSetCacheConfig(
            opts, options.cache.encode(), options.cache_config.encode()
        )
    )


def _set_sequence(lib: ctypes.CDLL, request: c_void_p, sequence: tuple[int, int]) -> None:
    """A sequence model's request: its sequence's correlation id and START/END flags."""
    correlation_id, flags = sequence
    if correlation_id:
        check(lib.TRITONSERVER_InferenceRequestSetCorrelationId(request, correlation_id))
    if flags:
        check(lib.TRITONSERVER_InferenceRequestSetFlags(request, flags))


class _Inference:
    """State of one in-flight request, reachable from callbacks by its integer id.

    `responses` holds the outputs of every non-null response in arrival order: one for an
    ordinary model, any number (zero included) for a decoupled one."""

    def __init__(self, ident: int, memory_type: MemoryType, device: int = 0) -> None:
        self.ident = ident
        self.memory_type = memory_type
        self.device = device  # the GPU of GPU buffers
        self.responses: list[dict[str, Output]] = []
        self.error: TritonError | None = None
        self.completed = threading.Event()
        self.released = threading.Event()
        self.keep_response = False
        self.input_buffers: list[tuple[MemoryType, int]] = []

    @property
    def outputs(self) -> dict[str, Output]:
        return self.responses[0] if self.responses else {}


class _Callbacks:
    """The CFUNCTYPE objects and the allocator, created once and kept for the process's life."""

    def __init__(self) -> None:
        self.inflight: dict[int, _Inference] = {}
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.kept_responses: list[int] = []  # injected leak: responses never deleted
        self.abandoned: list[tuple[int, _Inference]] = []  # timed-out requests, never freed
        self.alloc_fn = capi.ALLOC_FN(self._alloc)
        self.release_buffer_fn = capi.RELEASE_BUFFER_FN(self._release_buffer)
        self.request_release_fn = capi.REQUEST_RELEASE_FN(self._request_released)
        self.response_fn = capi.RESPONSE_FN(self._response)
        allocator = c_void_p()
        check(
            _lib().TRITONSERVER_ResponseAllocatorNew(
                byref(allocator),
                ctypes.cast(self.alloc_fn, c_void_p),
                ctypes.cast(self.release_buffer_fn, c_void_p),
                None,
            )
        )
        self.allocator = allocator

    def _error(self, text: str) -> int:
        return _lib().TRITONSERVER_ErrorNew(capi.ERROR_INTERNAL, text.encode())

    def _alloc(self, _alloc, name, size, _mtype, _mtid, userp, buf, buf_userp, actual, actual_id):
        try:
            inf = self.inflight.get(userp or 0)
            wanted = inf.memory_type if inf is not None else MemoryType.SYSTEM
            device = inf.device if inf is not None and wanted is MemoryType.GPU else 0
            buf_userp[0] = None
            actual[0] = mem.triton_code(wanted)
            actual_id[0] = device
            buf[0] = mem.allocate(wanted, size, device) if size else None
            return None
        except Exception as exc:  # an exception must not cross into C
            return self._error(f"soak allocator: {exc}")

    def _release_buffer(self, _alloc, buf, _buf_userp, _size, mtype, _mtid):
        try:
            if buf:
                mem.release(mem.from_triton(mtype), buf)
            return None
        except Exception as exc:
            return self._error(f"soak release: {exc}")

    def _request_released(self, _request, flags, userp):
        if flags & capi.RELEASE_ALL:
            inf = self.inflight.get(userp or 0)
            if inf is not None:
                inf.released.set()

    def _response(self, response, flags, userp):
        inf = self.inflight.get(userp or 0)
        try:
            if response:
                try:
                    if inf is not None:
                        self._read_response(inf, response)
                finally:  # a response that cannot be read is still deleted, once
                    if inf is not None and inf.keep_response:
                        self.kept_responses.append(response)
                    else:
                        check(_lib().TRITONSERVER_InferenceResponseDelete(response))
        except Exception as exc:
            if inf is not None and inf.error is None:
                inf.error = exc if isinstance(exc, TritonError) else TritonError("soak", str(exc))
        finally:
            if inf is not None and flags & capi.RESPONSE_FINAL:
                inf.completed.set()

    def _read_response(self, inf: _Inference, response: int) -> None:
        lib = _lib()
        # The header does not say so, but core builds a new error on every call
        # (RETURN_IF_STATUS_ERROR(response->ResponseStatus())) and Triton's own frontends delete
        # it: not deleting it leaked the message, +4.2 KB RSS per 4,000-character error.
        error = _take_error(lib.TRITONSERVER_InferenceResponseError(response))
        if error is not None:
            inf.error = error
            return
        count = c_uint32()
        check(lib.TRITONSERVER_InferenceResponseOutputCount(response, byref(count)))
        outputs: dict[str, Output] = {}
        inf.responses.append(outputs)
        for index in range(count.value):
            name, dtype = c_char_p(), c_int()
            shape, dims = ctypes.POINTER(c_int64)(), c_uint64()
            base, size = c_void_p(), c_size_t()
            mtype, mtid, userp = c_int(), c_int64(), c_void_p()
            check(
                lib.TRITONSERVER_InferenceResponseOutput(
                    response,
                    index,
                    byref(name),
                    byref(dtype),
                    byref(shape),
                    byref(dims),
                    byref(base),
                    byref(size),
                    byref(mtype),
                    byref(mtid),
                    byref(userp),
                )
            )
            output_name = name.value.decode()
            datatype = capi.DATATYPE_NAMES.get(dtype.value, str(dtype.value))
            dims_list = [shape[i] for i in range(dims.value)]
            actual = mem.from_triton(mtype.value)
            try:
                out = _copy_output(actual, base.value, size.value, datatype, dims_list)
            except tensors.DatatypeError as exc:
                raise TritonError("soak", f"output {output_name!r}: {exc}") from None
            outputs[output_name] = Output(out, actual, datatype)


def _copy_output(
    memory_type: MemoryType, base: int | None, size: int, datatype: str, dims: list[int]
) -> np.ndarray:
    """Copy one output buffer (any memory) into a numpy array of the datatype's carrier."""
    raw = np.empty(size, dtype=np.uint8)
    if size:
        mem.copy_out(memory_type, raw.ctypes.data, base, size)
    if datatype == "BYTES":
        return tensors.deserialize_bytes(raw.tobytes(), dims)
    out = np.empty(dims, dtype=tensors.numpy_dtype(datatype))
    if out.nbytes != size:
        raise tensors.DatatypeError(f"{size} bytes for a {datatype} tensor of shape {dims}")
    out.reshape(-1).view(np.uint8)[:] = raw
    return out


_callbacks: _Callbacks | None = None
_callbacks_lock = threading.Lock()


def _cb() -> _Callbacks:
    global _callbacks
    with _callbacks_lock:
        if _callbacks is None:
            _callbacks = _Callbacks()
        return _callbacks


def kept_response_count() -> int:
    return len(_callbacks.kept_responses) if _callbacks else 0


#: Triton 2.51 keeps one PinnedMemoryManager per process. ServerNew creates it without a lock
#: when there is none (`if (instance_ != nullptr) ...; instance_.reset(new ...)`), and every
#: ServerDelete destroys it (~InferenceServer calls PinnedMemoryManager::Reset). Two ServerNew
#: at once, or one during another server's ServerDelete, can free the manager under a running
#: Create: SIGSEGV in PinnedMemoryManager::AddPinnedMemoryBuffer, or glibc's "double free or
#: corruption" (tests/triton/test_server_creation.py). Servers whose options ask for it
#: (the default) take this lock around both calls.
_NEW_DELETE = threading.Lock()


def _new_delete_guard(options: ServerOptions) -> contextlib.AbstractContextManager:
    return _NEW_DELETE if options.serialize_new_delete else contextlib.nullcontext()


class Server:
    """One in-process Triton server; close() (or the with-block) stops and deletes it once."""

    receives_decoupled = True  # the C API delivers every response

    def __init__(self, options: ServerOptions) -> None:
        lib = _lib()
        self.options = options
        opts = c_void_p()
        check(lib.TRITONSERVER_ServerOptionsNew(byref(opts)))
        try:
            for repo in options.repositories:
                check(
                    lib.TRITONSERVER_ServerOptionsSetModelRepositoryPath(opts, str(repo).encode())
                )
            check(lib.TRITONSERVER_ServerOptionsSetServerId(opts, options.server_id.encode()))
            check(
                lib.TRITONSERVER_ServerOptionsSetModelControlMode(opts, capi.MODEL_CONTROL_EXPLICIT)
            )
            check(lib.TRITONSERVER_ServerOptionsSetStrictReadiness(opts, options.strict_readiness))
            check(
                lib.TRITONSERVER_ServerOptionsSetStrictModelConfig(
                    opts, options.strict_model_config
                )
            )
            check(lib.TRITONSERVER_ServerOptionsSetExitTimeout(opts, options.exit_timeout_s))
            # Set explicitly: left alone, a failing load (initialize raising) was seen retried
            # every 0.35 s forever in about half of the processes (libtritonserver 2.51).
            # Cores before 2.42 have neither the option nor the retry.
            if capi.has("TRITONSERVER_ServerOptionsSetModelLoadRetryCount"):
                check(
                    lib.TRITONSERVER_ServerOptionsSetModelLoadRetryCount(
                        opts, options.model_load_retry_count
                    )
                )
            check(
                lib.TRITONSERVER_ServerOptionsSetBackendDirectory(
                    opts, str(options.backends_dir).encode()
                )
            )
            check(lib.TRITONSERVER_ServerOptionsSetMetrics(opts, options.metrics))
            check(lib.TRITONSERVER_ServerOptionsSetGpuMetrics(opts, options.metrics))
            check(lib.TRITONSERVER_ServerOptionsSetCpuMetrics(opts, options.metrics))
            check(lib.TRITONSERVER_ServerOptionsSetLogInfo(opts, options.log_verbose > 0))
            check(lib.TRITONSERVER_ServerOptionsSetLogWarn(opts, True))
            check(lib.TRITONSERVER_ServerOptionsSetLogError(opts, True))
            check(lib.TRITONSERVER_ServerOptionsSetLogVerbose(opts, options.log_verbose))
            if options.log_file is not None:
                check(
                    lib.TRITONSERVER_ServerOptionsSetLogFile(opts, str(options.log_file).encode())
                )
            if options.min_compute_capability is not None:
                check(
                    lib.TRITONSERVER_ServerOptionsSetMinSupportedComputeCapability(
                        opts, options.min_compute_capability
                    )
                )
            if options.pinned_pool_bytes is not None:
                check(
                    lib.TRITONSERVER_ServerOptionsSetPinnedMemoryPoolByteSize(
                        opts, options.pinned_pool_bytes
                    )
                )
            if options.cache:
                _set_cache(lib, opts, options)
            handle = c_void_p()
            with _new_delete_guard(options):
                check(lib.TRITONSERVER_ServerNew(byref(handle), opts))
        finally:
            lib.TRITONSERVER_ServerOptionsDelete(opts)
        self._handle: int | None = handle.value
        self._lock = threading.Lock()

    # -- lifetime ---------------------------------------------------------------------------
    @property
    def handle(self) -> int:
        if self._handle is None:
            raise TritonError("soak", "server already deleted")
        return self._handle

    @property
    def closed(self) -> bool:
        return self._handle is None

    def stop(self) -> None:
        check(_lib().TRITONSERVER_ServerStop(self.handle))

    def delete(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            with _new_delete_guard(self.options):
                check(_lib().TRITONSERVER_ServerDelete(handle))

    def close(self) -> None:
        """Stop, then delete even when stop fails; the stop error is raised afterwards."""
        if self._handle is None:
            return
        try:
            self.stop()
        finally:
            self.delete()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- health and metadata ----------------------------------------------------------------
    def is_live(self) -> bool:
        flag = c_bool()
        check(_lib().TRITONSERVER_ServerIsLive(self.handle, byref(flag)))
        return flag.value

    def is_ready(self) -> bool:
        flag = c_bool()
        check(_lib().TRITONSERVER_ServerIsReady(self.handle, byref(flag)))
        return flag.value

    def metadata(self) -> dict:
        return self._json(_lib().TRITONSERVER_ServerMetadata)  # type: ignore[return-value]

    def _json(self, call: Callable[..., int | None], *args: object) -> object:
        """What a `TRITONSERVER_Server*` call that fills a TRITONSERVER_Message returns, as
        JSON; the message is deleted."""
        message = c_void_p()
        check(call(self.handle, *args, byref(message)))
        return _message_json(message)

    # -- models -----------------------------------------------------------------------------
    def load_model(self, name: str) -> None:
        check(_lib().TRITONSERVER_ServerLoadModel(self.handle, name.encode()))

    def unload_model(self, name: str) -> None:
        check(_lib().TRITONSERVER_ServerUnloadModel(self.handle, name.encode()))

    def model_is_ready(self, name: str, version: int = -1) -> bool:
        flag = c_bool()
        check(
            _lib().TRITONSERVER_ServerModelIsReady(self.handle, name.encode(), version, byref(flag))
        )
        return flag.value

    def model_index(self, ready_only: bool = False) -> list[dict]:
        """Every model of the server's repositories with its state ("READY", "UNAVAILABLE", ...)."""
        flags = capi.INDEX_FLAG_READY if ready_only else 0
        return self._json(_lib().TRITONSERVER_ServerModelIndex, flags)  # type: ignore[return-value]

    def model_statistics(self, name: str = "", version: int = -1) -> dict:
        call = _lib().TRITONSERVER_ServerModelStatistics
        return self._json(call, name.encode(), version)  # type: ignore[return-value]

    def request_counters(self) -> None:
        """No Prometheus endpoint in process (the C API's metrics are not read): None."""
        return None

    def model_metadata(self, name: str, version: int = -1) -> dict:
        """The model's metadata (inputs and outputs with datatype and shape, -1 variable)."""
        call = _lib().TRITONSERVER_ServerModelMetadata
        return self._json(call, name.encode(), version)  # type: ignore[return-value]

    def model_config(self, name: str, version: int = -1) -> dict:
        """The model's configuration as JSON (config format version 1)."""
        call = _lib().TRITONSERVER_ServerModelConfig
        return self._json(call, name.encode(), version, 1)  # type: ignore[return-value]

    # -- inference --------------------------------------------------------------------------
    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        memory_type: MemoryType = MemoryType.SYSTEM,
        timeout_s: float = 30.0,
        keep_response: bool = False,
        device: int = 0,
        datatypes: dict[str, str] | None = None,
        sequence: tuple[int, int] = (0, 0),
    ) -> dict[str, Output]:
        """Run one request and wait for its final response and its release.

        `keep_response` never deletes the response: an injected leak inside Triton's objects.
        `device` is the GPU that GPU input and output buffers live on.
        `datatypes` names an input's Triton datatype where its numpy dtype cannot (BF16).
        Returns the outputs of the first response (see `infer_responses` for decoupled models).
        `sequence` is (correlation id, request flags) for a sequence model; (0, 0): none.
        """
        return self._run(
            model,
            inputs,
            outputs,
            memory_type,
            timeout_s,
            keep_response,
            datatypes,
            device,
            sequence=sequence,
        ).outputs

    def infer_responses(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        memory_type: MemoryType = MemoryType.SYSTEM,
        timeout_s: float = 30.0,
        datatypes: dict[str, str] | None = None,
        device: int = 0,
        sequence: tuple[int, int] = (0, 0),
    ) -> list[dict[str, Output]]:
        """Every response of one request until the FINAL flag (a decoupled model sends any
        number; a final flag that comes without a response adds none)."""
        return self._run(
            model, inputs, outputs, memory_type, timeout_s, False, datatypes, device, sequence
        ).responses

    def _run(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        memory_type: MemoryType,
        timeout_s: float,
        keep_response: bool,
        datatypes: dict[str, str] | None,
        device: int = 0,
        sequence: tuple[int, int] = (0, 0),
    ) -> _Inference:
        request, inf = self._submit(
            model.encode(), inputs, outputs, memory_type, keep_response, datatypes, device, sequence
        )
        self._finish(model, request, inf, time.monotonic() + timeout_s, timeout_s)
        if inf.error is not None:
            raise inf.error
        return inf

    def infer_many(
        self,
        model: str,
        inputs: Iterable[dict[str, np.ndarray]],
        outputs: list[str],
        on_result: Callable[[int, dict[str, Output] | None, ServerError | None], bool],
        concurrency: int = 1,
        memory_type: MemoryType = MemoryType.SYSTEM,
        timeout_s: float = 30.0,
        device: int = 0,
        datatypes: dict[str, str] | None = None,
        keep: Callable[[int], bool] | None = None,
        expected: Callable[[int], dict[str, np.ndarray] | None] | None = None,
    ) -> int:
        """A burst: every request of `inputs`, at most `concurrency` in flight (Triton answers
        on its own threads), each handed to `on_result(index, outputs, error)` in submission
        order on this thread. `on_result` returning False stops the burst: nothing more is
        sent, what is in flight is still awaited and freed (not handed on). `keep(index)`
        true never deletes that request's response (the injected leak). Returns how many
        results were handed on (`expected` is for generators that check answers themselves:
        `on_result` checks these). InferenceTimeout when one request is not complete and
        released within `timeout_s` of its submission; the others in flight are then left to
        Triton as well (never freed: Triton may still call back)."""
        window: deque[tuple[c_void_p, _Inference, float]] = deque()
        name = model.encode()
        handed = 0
        going = True

        def collect() -> None:
            nonlocal handed, going
            request, inf, deadline = window.popleft()
            try:
                self._finish(model, request, inf, deadline, timeout_s)
            except InferenceTimeout:
                abandon = _cb().abandoned
                while window:
                    request, inf, _ = window.popleft()
                    abandon.append((request.value, inf))
                raise
            if going:
                handed += 1
                going = bool(on_result(handed - 1, inf.outputs, inf.error))

        try:
            for index, item in enumerate(inputs):
                if not going:
                    break
                while len(window) >= max(1, concurrency):
                    collect()
                    if not going:
                        break
                if not going:
                    break
                keep_one = bool(keep is not None and keep(index))
                try:
                    request, inf = self._submit(
                        name, item, outputs, memory_type, keep_one, datatypes, device
                    )
                except TritonError as exc:
                    while window:
                        collect()
                    if going:
                        handed += 1
                        going = bool(on_result(index, None, exc))
                    continue
                window.append((request, inf, time.monotonic() + timeout_s))
            while window:
                collect()
        except BaseException:
            # An exception from on_result or the input iterator: what is in flight still
            # completes and is freed (unless it never does: then it stays Triton's).
            going = False
            while window:
                try:
                    collect()
                except InferenceTimeout:
                    break
            raise
        return handed

    def _submit(
        self,
        model: bytes,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        memory_type: MemoryType,
        keep_response: bool,
        datatypes: dict[str, str] | None,
        device: int = 0,
        sequence: tuple[int, int] = (0, 0),
    ) -> tuple[c_void_p, _Inference]:
        """Build one request and send it; on failure everything it made is freed again."""
        lib = _lib()
        cb = _cb()
        inf = _Inference(next(cb.ids), memory_type, device)
        device_id = device if memory_type is MemoryType.GPU else 0
        inf.keep_response = keep_response
        request = c_void_p()
        check(lib.TRITONSERVER_InferenceRequestNew(byref(request), self.handle, model, -1))
        started = False
        try:
            _set_sequence(lib, request, sequence)
            for name, array in inputs.items():
                array = np.asarray(array)
                try:
                    datatype = (datatypes or {}).get(name) or tensors.datatype_of(array)
                    wire = tensors.to_wire(array, datatype)
                except tensors.DatatypeError as exc:
                    raise TritonError("soak", f"input {name!r}: {exc}") from None
                data = np.frombuffer(wire, dtype=np.uint8) if isinstance(wire, bytes) else wire
                shape = (c_int64 * array.ndim)(*array.shape)
                check(
                    lib.TRITONSERVER_InferenceRequestAddInput(
                        request, name.encode(), capi.DATATYPES[datatype], shape, array.ndim
                    )
                )
                ptr = mem.allocate(memory_type, data.nbytes, device_id)
                inf.input_buffers.append((memory_type, ptr))
                if data.nbytes:
                    mem.copy_in(memory_type, ptr, data.ctypes.data, data.nbytes)
                check(
                    lib.TRITONSERVER_InferenceRequestAppendInputData(
                        request,
                        name.encode(),
                        ptr,
                        data.nbytes,
                        mem.triton_code(memory_type),
                        device_id,
                    )
                )
            for name in outputs:
                check(lib.TRITONSERVER_InferenceRequestAddRequestedOutput(request, name.encode()))
            check(
                lib.TRITONSERVER_InferenceRequestSetReleaseCallback(
                    request, ctypes.cast(cb.request_release_fn, c_void_p), inf.ident
                )
            )
            check(
                lib.TRITONSERVER_InferenceRequestSetResponseCallback(
                    request,
                    cb.allocator,
                    inf.ident,
                    ctypes.cast(cb.response_fn, c_void_p),
                    inf.ident,
                )
            )
            cb.inflight[inf.ident] = inf
            check(lib.TRITONSERVER_ServerInferAsync(self.handle, request, None))
            started = True
        except BaseException:
            cb.inflight.pop(inf.ident, None)
            if not started:
                lib.TRITONSERVER_InferenceRequestDelete(request)
                self._free_inputs(inf)
            raise
        return request, inf

    def _finish(
        self, model: str, request: c_void_p, inf: _Inference, deadline: float, timeout_s: float
    ) -> None:
        """Wait for the final response and the release, then free the request (once)."""
        cb = _cb()
        if not (
            inf.completed.wait(max(0.0, deadline - time.monotonic()))
            and inf.released.wait(max(0.0, deadline - time.monotonic()))
        ):
            # Triton may still call back: keep everything alive, free nothing.
            cb.abandoned.append((request.value, inf))
            raise InferenceTimeout(
                "soak", f"inference on {model!r} did not complete within {timeout_s:g} s"
            )
        cb.inflight.pop(inf.ident, None)
        check(_lib().TRITONSERVER_InferenceRequestDelete(request))
        self._free_inputs(inf)

    @staticmethod
    def _free_inputs(inf: _Inference) -> None:
        for mtype, ptr in inf.input_buffers:
            mem.release(mtype, ptr)
        inf.input_buffers.clear()


@dataclass
class Runtime:
    """A loaded Triton core plus the backend folder of this run."""

    install: capi.TritonInstall
    backends_dir: Path
    api_version: tuple[int, int]
    stub: Path
    env: dict[str, str] = field(default_factory=dict)
