"""RemoteServer: the methods of soak.triton.server.Server over HTTP or gRPC (tritonclient),
with the same arguments, return shapes and TritonError, so the workload cannot tell them apart.

JSON comes back as the C API gives it (soak.tritonserver.answers). The HTTP client (gevent)
is not thread safe, and the workload calls one server from several threads: each thread gets
its own client and its own shared-memory regions.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from google.protobuf.json_format import MessageToDict
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

from soak.target.interface import SEQUENCE_END, SEQUENCE_START, Output
from soak.triton.memory import MemoryType
from soak.triton.returns import InferenceTimeout, TritonError
from soak.tritonserver.answers import proto_json, triton_error, version_arg

log = logging.getLogger(__name__)

PROTOCOLS = ("http", "grpc")
SHARED_MEMORY = ("none", "system")
#: Prefix of the system shared-memory regions soak's client creates (`/dev/shm/<prefix>...`).
CLIENT_REGION_PREFIX = "soak_client_shm_"

_regions = itertools.count()


class _Region:
    """One system shared-memory region of this client, registered with the server."""

    def __init__(self, size: int) -> None:
        self.name = f"{CLIENT_REGION_PREFIX}{os.getpid()}_{next(_regions)}"
        self.size = size
        self.handle = shm.create_shared_memory_region(self.name, "/" + self.name, size)


class _PerThread(threading.local):
    client: Any = None
    regions: dict[str, _Region] | None = None
    generation: int = 0  # regions of an older generation were released


class RemoteServer:
    """A tritonserver reached over `protocol` at `url` ("127.0.0.1:PORT"); close() once.

    `streaming`: every inference goes through one gRPC bidirectional stream (how decoupled
    models are served), all responses collected until the final flag. `shared_memory="system"`:
    fixed-size inputs and outputs travel through regions registered with the server; they are
    kept for reuse until release_shared_memory() or close() unregisters and unlinks them.
    HTTP inference has no per-call deadline: `network_timeout_s` bounds every HTTP call.
    """

    def __init__(
        self,
        url: str,
        protocol: str = "http",
        streaming: bool = False,
        shared_memory: str = "none",
        network_timeout_s: float = 60.0,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
        if shared_memory not in SHARED_MEMORY:
            raise ValueError(f"shared_memory must be one of {SHARED_MEMORY}, not {shared_memory!r}")
        if streaming and protocol != "grpc":
            raise ValueError("streaming needs protocol 'grpc'")
        self.url = url
        self.protocol = protocol
        self.streaming = streaming
        self.shared_memory = shared_memory
        self.network_timeout_s = network_timeout_s
        self._local = _PerThread()
        self._clients: list[Any] = []
        self._all_regions: list[tuple[Any, _Region]] = []
        self._lock = threading.Lock()
        self._stream_lock = threading.Lock()
        self._stream_client: Any = None
        self._stream_results: queue.Queue = queue.Queue()
        self._output_specs: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
        self._generation = 0
        self._closed = False
        self._client()  # a bad url fails here, not at the first call

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def grpc(self) -> bool:
        return self.protocol == "grpc"

    def _client(self) -> Any:
        if self._closed:
            raise TritonError("soak", "server client already closed")
        client = self._local.client
        if client is None:
            if self.grpc:
                client = grpcclient.InferenceServerClient(self.url)
            else:
                client = httpclient.InferenceServerClient(
                    self.url,
                    connection_timeout=self.network_timeout_s,
                    network_timeout=self.network_timeout_s,
                )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            raise triton_error(exc) from None
        except TimeoutError as exc:
            raise InferenceTimeout("soak", f"{self.protocol} call timed out: {exc}") from None
        except OSError as exc:  # connection refused or reset: the server is gone
            raise TritonError("Unavailable", f"{self.protocol} {self.url}: {exc}") from None

    def _json(self, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._client()
        if self.grpc:
            return proto_json(self._call(getattr(client, method), *args, **kwargs))
        return self._call(getattr(client, method), *args, **kwargs)

    # -- lifetime ---------------------------------------------------------------------------
    @property
    def receives_decoupled(self) -> bool:
        """Only gRPC's stream carries a decoupled model's responses."""
        return self.streaming

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unregister and unlink this client's regions, end the stream, close every client.
        The server process is not this object's to stop."""
        if self._closed:
            return
        try:
            self.release_shared_memory()
        finally:
            self._closed = True
            self._end_stream()
            with self._lock:
                clients, self._clients = self._clients, []
            for client in clients:
                try:
                    client.close()
                except Exception as exc:  # noqa: BLE001 - closing must go on
                    log.debug("closing a %s client: %s", self.protocol, exc)

    def __enter__(self) -> RemoteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- health and metadata ----------------------------------------------------------------
    def is_live(self) -> bool:
        return bool(self._call(self._client().is_server_live))

    def is_ready(self) -> bool:
        return bool(self._call(self._client().is_server_ready))

    def metadata(self) -> dict:
        return self._json("get_server_metadata")

    # -- models -----------------------------------------------------------------------------
    def load_model(self, name: str) -> None:
        self._output_specs.pop(name, None)
        self._call(self._client().load_model, name)

    def unload_model(self, name: str) -> None:
        """Ends the stream first: Triton 2.51 keeps a model that served a request over a gRPC
        stream UNLOADING until that stream closes (seen: still UNLOADING after 5 s, unloaded
        1.3 s after the stream closed); the next streamed request opens a new one."""
        self._output_specs.pop(name, None)
        self._end_stream()
        self._call(self._client().unload_model, name)

    def _end_stream(self) -> None:
        with self._stream_lock:
            client, self._stream_client = self._stream_client, None
            if client is not None:
                client.stop_stream(cancel_requests=True)
            self._stream_results = queue.Queue()

    def model_is_ready(self, name: str, version: int = -1) -> bool:
        return bool(self._call(self._client().is_model_ready, name, version_arg(version)))

    def model_index(self, ready_only: bool = False) -> list[dict]:
        """[{name, version, state[, reason]}] as the C API's index; `ready_only` filters here
        (the gRPC and HTTP index calls take a ready flag too, HTTP's only as JSON body)."""
        if self.grpc:
            answer = self._call(self._client().get_model_repository_index)
            models = [MessageToDict(m, preserving_proto_field_name=True) for m in answer.models]
        else:
            models = self._call(self._client().get_model_repository_index)
        index = []
        for model in models:
            entry = {k: model[k] for k in ("name", "version", "state") if k in model}
            if model.get("reason"):
                entry["reason"] = model["reason"]
            index.append(entry)
        if ready_only:
            index = [m for m in index if m.get("state") == "READY"]
        return index

    def model_statistics(self, name: str = "", version: int = -1) -> dict:
        return self._json("get_inference_statistics", name, version_arg(version))

    def model_metadata(self, name: str, version: int = -1) -> dict:
        return self._json("get_model_metadata", name, version_arg(version))

    def model_config(self, name: str, version: int = -1) -> dict:
        """The model's configuration as JSON (gRPC's `config` field, unwrapped)."""
        if self.grpc:
            answer = self._call(self._client().get_model_config, name, version_arg(version))
            return proto_json(answer.config)
        return self._call(self._client().get_model_config, name, version_arg(version))

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
        """One request; the outputs of its first response. `memory_type` must be system
        (the client's buffers are host memory), `keep_response` has no remote meaning;
        `sequence` is (correlation id, START/END flags) as for the in-process server."""
        if keep_response:
            raise TritonError("soak", "keep_response (an in-process injected leak) is not remote")
        responses = self._responses(
            model, inputs, outputs, memory_type, timeout_s, datatypes, sequence
        )
        return responses[0] if responses else {}

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
        """Every response of one request until the final flag (gRPC streaming); without a
        stream a request has exactly one response."""
        return self._responses(model, inputs, outputs, memory_type, timeout_s, datatypes, sequence)

    def _responses(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        memory_type: MemoryType,
        timeout_s: float,
        datatypes: dict[str, str] | None,
        sequence: tuple[int, int] = (0, 0),
    ) -> list[dict[str, Output]]:
        if memory_type is not MemoryType.SYSTEM:
            raise TritonError("soak", f"{memory_type.value} memory is not reachable remotely")
        module = grpcclient if self.grpc else httpclient
        regions = (
            self._regions_for(model, inputs, outputs) if self.shared_memory == "system" else {}
        )
        request_inputs = []
        for name, array in inputs.items():
            array = np.asarray(array)
            datatype = (datatypes or {}).get(name) or np_to_triton_dtype(array.dtype)
            item = module.InferInput(name, list(array.shape), datatype)
            if name in regions:
                region, offset, size = regions[name]
                shm.set_shared_memory_region(region.handle, [array], offset)
                item.set_shared_memory(region.name, size, offset)
            else:
                item.set_data_from_numpy(array)
            request_inputs.append(item)
        requested = []
        for name in outputs:
            item = module.InferRequestedOutput(name)
            if name in regions:
                region, offset, size = regions[name]
                item.set_shared_memory(region.name, size, offset)
            requested.append(item)
        correlation, flags = sequence
        seq = (
            {
                "sequence_id": correlation,
                "sequence_start": bool(flags & SEQUENCE_START),
                "sequence_end": bool(flags & SEQUENCE_END),
            }
            if correlation
            else {}
        )
        if self.streaming:
            results = self._stream(model, request_inputs, requested, timeout_s, seq)
        elif self.grpc:
            results = [
                self._call(
                    self._client().infer,
                    model,
                    request_inputs,
                    outputs=requested,
                    client_timeout=timeout_s,
                    **seq,
                )
            ]
        else:
            results = [
                self._call(self._client().infer, model, request_inputs, outputs=requested, **seq)
            ]
        return [self._read(result, outputs, regions) for result in results]

    def _read(self, result: Any, names: list[str], regions: dict) -> dict[str, Output]:
        read: dict[str, Output] = {}
        for name in names:
            described = result.get_output(name)
            if described is None:
                continue
            if self.grpc:
                datatype, shape = described.datatype, list(described.shape)
            else:
                datatype, shape = described["datatype"], described["shape"]
            if name in regions:
                region, offset, _ = regions[name]
                array = shm.get_contents_as_numpy(
                    region.handle, triton_to_np_dtype(datatype), shape, offset
                ).copy()
            else:
                array = result.as_numpy(name)
            read[name] = Output(array, MemoryType.SYSTEM, datatype)
        return read

    def _stream(
        self, model: str, inputs: list, outputs: list, timeout_s: float, seq: dict | None = None
    ) -> list[Any]:
        """One request on the stream and its responses up to the final flag; one request at a
        time per server (a stream's errors do not say which request they belong to)."""
        with self._stream_lock:
            if self._stream_client is None:
                self._stream_client = self._client()
                self._call(self._stream_client.start_stream, self._on_stream)
            self._call(
                self._stream_client.async_stream_infer,
                model,
                inputs,
                outputs=outputs,
                enable_empty_final_response=True,
                **(seq or {}),
            )
            results = []
            while True:
                try:
                    result, error = self._stream_results.get(timeout=timeout_s)
                except queue.Empty:
                    raise InferenceTimeout(
                        "soak", f"no final response from {model!r} within {timeout_s:g} s"
                    ) from None
                if error is not None:
                    raise triton_error(error)
                response = result.get_response()
                final = response.parameters.get("triton_final_response")
                if response.outputs or not (final and final.bool_param):
                    results.append(result)
                if final is None or final.bool_param:
                    return results

    def _on_stream(self, result: Any, error: Any) -> None:
        self._stream_results.put((result, error))

    # -- system shared memory ---------------------------------------------------------------
    def _regions_for(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, tuple[_Region, int, int]]:
        """(region, offset, bytes) per tensor: inputs by their size, outputs by the model's
        metadata; BYTES and variable-shape tensors, and a stream's outputs, travel on the wire."""
        sizes: dict[str, int] = {}
        for name, array in inputs.items():
            array = np.asarray(array)
            if array.dtype != np.object_:
                sizes[name] = array.nbytes
        specs = self._output_specs.get(model)
        if specs is None:
            meta = self.model_metadata(model)
            specs = {t["name"]: (t["datatype"], tuple(t["shape"])) for t in meta.get("outputs", [])}
            self._output_specs[model] = specs
        # A stream's responses would all land in one output region before the first is read.
        for name in [] if self.streaming else outputs:
            datatype, shape = specs.get(name, ("BYTES", ()))
            if datatype != "BYTES" and all(d >= 0 for d in shape):
                sizes[name] = (
                    int(np.prod(shape, dtype=np.int64))
                    * np.dtype(triton_to_np_dtype(datatype)).itemsize
                )
        placed: dict[str, tuple[_Region, int, int]] = {}
        for direction, names in (("in", list(inputs)), ("out", outputs)):
            wanted = [n for n in names if n in sizes]
            total = sum(sizes[n] for n in wanted)
            if not total:
                continue
            region = self._region(direction, total)
            offset = 0
            for name in wanted:
                placed[name] = (region, offset, sizes[name])
                offset += sizes[name]
        return placed

    def _region(self, direction: str, size: int) -> _Region:
        """This thread's `direction` region, grown (replaced) when too small."""
        if self._local.regions is None or self._local.generation != self._generation:
            self._local.regions = {}
            self._local.generation = self._generation
        region = self._local.regions.get(direction)
        if region is not None and region.size >= size:
            return region
        client = self._client()
        if region is not None:
            self._drop(client, region)
        region = _Region(size)
        with self._lock:
            self._all_regions.append((client, region))
        self._local.regions[direction] = region
        self._call(client.register_system_shared_memory, region.name, "/" + region.name, size)
        return region

    def _drop(self, client: Any, region: _Region) -> None:
        with self._lock:
            self._all_regions = [(c, r) for c, r in self._all_regions if r is not region]
        try:
            self._call(client.unregister_system_shared_memory, region.name)
        finally:
            shm.destroy_shared_memory_region(region.handle)

    def release_shared_memory(self) -> None:
        """Unregister every region of this client from the server and unlink it; the next
        shared-memory inference creates new ones. The unlink happens even when the server
        cannot be reached, and the first error is raised afterwards."""
        with self._lock:
            regions, self._all_regions = self._all_regions, []
            self._generation += 1  # every thread's regions are gone
        first: Exception | None = None
        for client, region in regions:
            try:
                self._call(client.unregister_system_shared_memory, region.name)
            except TritonError as exc:
                first = first or exc
            finally:
                shm.destroy_shared_memory_region(region.handle)
        if first is not None:
            raise first
