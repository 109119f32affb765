"""The tritonserver process users deploy, driven from outside: its executable and environment,
the process's life, a tritonclient implementation of the server interface, perf_analyzer
bursts and the Prometheus metrics. Never the C API (that is soak.triton's alone)."""

#: Prefix of the system shared-memory regions soak's client creates
#: (`/dev/shm/<prefix><pid>_<n>`): the client names them, the supervisor removes a dead
#: worker's. Here, where importing it loads no tritonclient.
CLIENT_REGION_PREFIX = "soak_client_shm_"
