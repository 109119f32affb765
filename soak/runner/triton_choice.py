"""Which Triton a run uses: a profile's `triton` (a version or a home, or a matrix axis of
them) resolved into the `triton_home` the worker loads, and the home a run row records.

Resolution reads the machine (soak's cache of installed homes, the default core's version),
so it happens here, in the runner, never in the profile: profiles stay plain data.
"""

from __future__ import annotations

from dataclasses import replace

from soak.errors import ProfileError
from soak.profile.profile import Profile


def resolved(profile: Profile) -> Profile:
    """The profile with `triton` turned into `triton_home` ("" for the default core)."""
    value = profile.run.get("triton") or ""
    if not value:
        return profile
    from soak.triton_homes import run_home

    home = run_home(value)
    return replace(profile, run={**profile.run, "triton_home": str(home) if home else ""})


def check(profile: Profile) -> None:
    """Every `triton` value of the profile (its own, its matrix axis) resolves, else one line
    naming where it was given and how to install it; before any run row exists."""
    from soak.triton_homes import run_home

    values = [("triton", profile.run.get("triton") or "")]
    values += [("matrix.triton", v) for v in profile.matrix.get("triton", ())]
    for label, value in values:
        if not value:
            continue
        if "triton" in profile.overrides:
            label = "--triton"
        try:
            run_home(value)
        except ProfileError as exc:
            raise ProfileError(f"{profile.source}: {label} = {value!r}: {exc}") from None


def home_column(profile: Profile) -> str | None:
    """The home a run's Triton comes from, for its runs row: the folder whose `backends/` the
    run loads (for the nvidia-pytriton wheel, its `tritonserver/` folder); None if no core is
    found (the worker then reports that)."""
    from soak.errors import SoakError
    from soak.triton import capi

    try:
        install = capi.locate(profile.run.get("triton_home") or None)
    except SoakError:
        return None
    return str(install.backends_dir.parent.resolve())
