"""What soak knows about Triton 2.51 outside the C API: executable names, prefixes, messages.

Plain constants only: importing this loads neither libtritonserver nor the ctypes prototypes,
so the supervisor (which samples Triton's processes but never hosts Triton) can use them.
"""

STUB_EXECUTABLE = "triton_python_backend_stub"
"""File name of the python backend's stub executable: one process per model instance."""

REGION_PREFIX = "triton_python_backend_shm_region_"
"""Default ``shm-region-prefix-name`` of the python backend; a region is this plus a uuid."""

EXIT_TIMEOUT_EXPIRED = "Exit timeout expired"
"""In the error of a server stop that gave up waiting for models still in use."""

BUSY_MODEL_STATES = ("READY", "UNLOADING", "LOADING")
"""Model index states of a model that is not yet fully unloaded."""
