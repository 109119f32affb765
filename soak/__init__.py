"""soak: a resource-leak soak tester for NVIDIA Triton Inference Server.

It creates, exercises and destroys real in-process Triton servers in a loop, samples the
process at a quiet point after every iteration, stores the samples in SQLite and judges
whether anything grows.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``soak.run``, ``soak.prepare`` and ``soak.load_profile``, imported on first use (a
    worker process imports this package and must stay light)::

        import soak

        prof = soak.load_profile("smoke")
        analyses = soak.run(prof, soak.prepare(prof, "results/soak.db"))
    """
    if name in ("run", "prepare", "Stopper"):
        from soak.runner import session

        return getattr(session, name)
    if name == "load_profile":
        from soak.profile import load

        return load
    raise AttributeError(f"module 'soak' has no attribute {name!r}")
