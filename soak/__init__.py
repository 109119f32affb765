"""soak: a resource-leak soak tester for NVIDIA Triton Inference Server.

It creates, exercises and destroys real in-process Triton servers in a loop, samples the
process at a quiet point after every iteration, stores the samples in SQLite and judges
whether anything grows.
"""

__version__ = "0.1.0"
