"""RemoteServer: the methods of soak.triton.server.Server over HTTP or gRPC (tritonclient),
with the same arguments, return shapes and TritonError, so the workload cannot tell them apart.

JSON comes back as the C API gives it (soak.tritonserver.answers). The HTTP client (gevent)
is not thread safe, and the workload calls one server from several threads: each thread gets
its own client and its own shared-memory regions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from google.protobuf.json_format import MessageToDict
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

from soak.target.interface import (
    SEQUENCE_END,
    SEQUENCE_START,
    OnResult,
    Output,
    infer_one_by_one,
)
from soak.triton.memory import MemoryType
from soak.triton.returns import InferenceTimeout, TritonError
from soak.tritonserver.answers import index_entries, proto_json, triton_error, version_arg
from soak.tritonserver.regions import Region, tensor_sizes
from soak.tritonserver.stream import GrpcStream
from soak.tritonserver.window import HttpThreads, infer_window

log = logging.getLogger(__name__)

PROTOCOLS = ("http", "grpc")
SHARED_MEMORY = ("none", "system")


class _PerThread(threading.local):
    client: Any = None
    regions: dict[str, Region] | None = None
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
        concurrency: int = 1,
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
        self.concurrency = max(1, concurrency)  # HTTP threads for requests in flight
        self._local = _PerThread()
        self._clients: list[Any] = []
        self._all_regions: list[tuple[Any, Region]] = []
        self._lock = threading.Lock()
        self._stream = GrpcStream(self._client, self._call)
        self._output_specs: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
        self._generation = 0
        self._pool: HttpThreads | None = None  # HTTP requests in flight (window.submit)
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

    def forget_thread_client(self) -> None:
        """Close this thread's client (before the thread ends) and forget it."""
        client, self._local.client = self._local.client, None
        if client is not None:
            with self._lock:
                self._clients = [c for c in self._clients if c is not client]
            client.close()

    def http_threads(self) -> HttpThreads:
        """`concurrency` HTTP threads (own client and regions each), as long-lived as this."""
        if self._pool is None:
            self._pool = HttpThreads(self, self.concurrency)
        return self._pool

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
        if self._pool is not None:
            self._pool.close()
        try:
            self.release_shared_memory()
        finally:
            self._closed = True
            self._stream.end()
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
        self._stream.end()
        self._call(self._client().unload_model, name)

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
        return index_entries(models, ready_only)

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
        """As `ModelServer.infer`; `memory_type` must be system (the client's buffers are host
        memory) and `keep_response` has no remote meaning."""
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
        """As `ModelServer.infer_responses`; several responses only over a gRPC stream,
        otherwise exactly one."""
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
        request_inputs, requested, regions, seq = self.prepare_request(
            model, inputs, outputs, datatypes, sequence
        )
        if self.streaming:
            results = self._stream.request(model, request_inputs, requested, timeout_s, seq)
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
        return [self.read_outputs(result, outputs, regions) for result in results]

    def infer_many(
        self,
        model: str,
        inputs: Iterable[dict[str, np.ndarray]],
        outputs: list[str],
        on_result: OnResult,
        concurrency: int = 1,
        memory_type: MemoryType = MemoryType.SYSTEM,
        timeout_s: float = 30.0,
        device: int = 0,
        datatypes: dict[str, str] | None = None,
        keep: Callable[[int], bool] | None = None,
        expected: Callable[[int], dict[str, np.ndarray] | None] | None = None,
    ) -> int:
        """A burst with `concurrency` requests in flight (gRPC async_infer, HTTP threads),
        results handed on in submission order (soak.tritonserver.window). A stream sends one
        request at a time: its errors do not say which request they belong to."""
        if concurrency <= 1 or self.streaming:
            return infer_one_by_one(
                self, model, inputs, outputs, on_result, memory_type, timeout_s, device,
                datatypes, keep,
            )  # fmt: skip
        if memory_type is not MemoryType.SYSTEM:
            raise TritonError("soak", f"{memory_type.value} memory is not reachable remotely")
        return infer_window(
            self, model, inputs, outputs, on_result, concurrency, timeout_s, datatypes, keep
        )

    def prepare_request(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        datatypes: dict[str, str] | None,
        sequence: tuple[int, int] = (0, 0),
        slot: int = 0,
    ) -> tuple[list, list, dict, dict]:
        """One request's inputs and requested outputs, through slot `slot`'s regions (one pair
        per request in flight) when shared memory is on; its sequence arguments."""
        module = grpcclient if self.grpc else httpclient
        regions = (
            {} if self.shared_memory == "none" else self._regions_for(model, inputs, outputs, slot)
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
        return request_inputs, requested, regions, seq

    def read_outputs(self, result: Any, names: list[str], regions: dict) -> dict[str, Output]:
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

    # -- system shared memory ---------------------------------------------------------------
    def _regions_for(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str], slot: int = 0
    ) -> dict[str, tuple[Region, int, int]]:
        """(region, offset, bytes) per tensor: inputs by their size, outputs by the model's
        metadata; BYTES and variable-shape tensors, and a stream's outputs, travel on the wire."""
        specs = self._output_specs.get(model)
        if specs is None:
            meta = self.model_metadata(model)
            specs = {t["name"]: (t["datatype"], tuple(t["shape"])) for t in meta.get("outputs", [])}
            self._output_specs[model] = specs
        sizes = tensor_sizes(inputs, outputs, specs, self.streaming)
        placed: dict[str, tuple[Region, int, int]] = {}
        for direction, names in (("in", list(inputs)), ("out", outputs)):
            wanted = [n for n in names if n in sizes]
            total = sum(sizes[n] for n in wanted)
            if not total:
                continue
            region = self._region(f"{direction}{slot}", total)
            offset = 0
            for name in wanted:
                placed[name] = (region, offset, sizes[name])
                offset += sizes[name]
        return placed

    def _region(self, direction: str, size: int) -> Region:
        """This thread's `direction` region ("in0", "out1": direction and slot), grown
        (replaced) when too small."""
        if self._local.regions is None or self._local.generation != self._generation:
            self._local.regions = {}
            self._local.generation = self._generation
        region = self._local.regions.get(direction)
        if region is not None and region.size >= size:
            return region
        client = self._client()
        if region is not None:
            self._drop(client, region)
        region = Region(size)
        with self._lock:
            self._all_regions.append((client, region))
        self._local.regions[direction] = region
        self._call(client.register_system_shared_memory, region.name, "/" + region.name, size)
        return region

    def _drop(self, client: Any, region: Region) -> None:
        with self._lock:
            self._all_regions = [(c, r) for c, r in self._all_regions if r is not region]
        try:
            self._call(client.unregister_system_shared_memory, region.name)
        finally:
            shm.destroy_shared_memory_region(region.handle)

    def abandon(self) -> None:
        """The server is gone, its registrations with it: unlink this client's regions with no
        call to it (a stub that outlives its server holds the server's connections open, and
        a call on one waits the whole network timeout) and refuse any further call. Any thread
        may call this while another still waits in a call."""
        with self._lock:
            regions, self._all_regions = self._all_regions, []
            self._generation += 1
            self._closed = True
        for _, region in regions:
            region.unlink()

    def release_shared_memory(self) -> None:
        """Unregister every region of this client from the server and unlink it; the next
        shared-memory inference creates new ones. The unlink happens even when the server
        cannot be reached, and the first error is raised afterwards."""
        with self._lock:
            regions, self._all_regions = self._all_regions, []
            self._generation += 1  # every thread's regions are gone
        first: Exception | None = None
        for _, region in regions:
            try:  # through this thread's client: the one that registered it may have ended
                self._call(self._client().unregister_system_shared_memory, region.name)
            except TritonError as exc:
                first = first or exc
            finally:
                shm.destroy_shared_memory_region(region.handle)
        if first is not None:
            raise first
