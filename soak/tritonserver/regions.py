"""System shared-memory regions of soak's client: one named region, and how many bytes each
tensor of a request takes in one (what travels on the wire instead has no size here)."""

from __future__ import annotations

import itertools
import os

import numpy as np
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import triton_to_np_dtype

from soak.tritonserver import CLIENT_REGION_PREFIX

_numbers = itertools.count()


class Region:
    """One system shared-memory region of this client, registered with the server."""

    def __init__(self, size: int) -> None:
        self.name = f"{CLIENT_REGION_PREFIX}{os.getpid()}_{next(_numbers)}"
        self.size = size
        self.handle = shm.create_shared_memory_region(self.name, "/" + self.name, size)

    def unlink(self) -> None:
        """Remove the name from /dev/shm only: the mapping stays valid for a call still using
        it, and ends with the process."""
        try:
            os.unlink(f"/dev/shm/{self.name}")
        except FileNotFoundError:
            pass


def tensor_sizes(
    inputs: dict[str, np.ndarray],
    outputs: list[str],
    specs: dict[str, tuple[str, tuple[int, ...]]],
    streaming: bool,
) -> dict[str, int]:
    """Bytes per tensor that goes through a region: inputs by their size, outputs by the
    model's metadata (`specs`: name -> (datatype, shape)). BYTES and variable-shape tensors
    travel on the wire, and so do a stream's outputs: its responses would all land in one
    output region before the first is read."""
    sizes: dict[str, int] = {}
    for name, array in inputs.items():
        array = np.asarray(array)
        if array.dtype != np.object_:
            sizes[name] = array.nbytes
    for name in [] if streaming else outputs:
        datatype, shape = specs.get(name, ("BYTES", ()))
        if datatype != "BYTES" and all(d >= 0 for d in shape):
            sizes[name] = (
                int(np.prod(shape, dtype=np.int64))
                * np.dtype(triton_to_np_dtype(datatype)).itemsize
            )
    return sizes
