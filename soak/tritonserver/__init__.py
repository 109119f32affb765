"""The tritonserver process users deploy, driven from outside: its executable and environment,
the process's life, a tritonclient implementation of the server interface, perf_analyzer
bursts and the Prometheus metrics. Never the C API (that is soak.triton's alone)."""
