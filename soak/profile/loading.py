"""Loading profiles: a file (or a shipped profile's name) read, parsed and validated into a Profile.

Every value is checked against `soak.profile.schema`; an error names the file, the key and
what is allowed, in one line.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from soak.errors import ProfileError
from soak.profile import checks, tables, targets
from soak.profile.profile import Profile
from soak.profile.schema import RUN_KEYS
from soak.profile.sections import MODELS_KEYS, SECTIONS
from soak.profile.thresholds import (
    default_thresholds,
)

PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "profiles"


#: A profile is a small text file; anything larger is a mistake (a log, a device, a dump).
MAX_PROFILE_BYTES = 1 << 20


def resolve_path(name_or_path: str) -> Path:
    """A bare name ('smoke') is a shipped profile under profiles/; a path is a path.

    Anything with a '/' or a '.toml' suffix is a path, so a file or folder named like a shipped
    profile in the working directory never shadows it (`./smoke` runs that file).
    """
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        return Path(name_or_path)
    return PROFILES_DIR / f"{name_or_path}.toml"


def shipped_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def _shown(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load(name_or_path: str) -> Profile:
    """Read and validate a profile: a regular UTF-8 file of at most MAX_PROFILE_BYTES."""
    path = resolve_path(name_or_path)
    bare = path.parent == PROFILES_DIR and "/" not in name_or_path
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        if bare:
            local = ""
            try:
                if Path(name_or_path).exists():
                    local = f"; to run the file {name_or_path} here, give a path: ./{name_or_path}"
            except OSError:
                pass
            raise ProfileError(
                f"{_shown(name_or_path)}: no shipped profile of that name (shipped: "
                f"{', '.join(shipped_names())}){local}"
            ) from None
        raise ProfileError(
            f"{_shown(str(path))}: no such profile file (profiles available by name: "
            f"{', '.join(shipped_names())})"
        ) from None
    except OSError as exc:
        raise ProfileError(f"{_shown(str(path))}: cannot read: {exc.strerror}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ProfileError(f"{path}: is a directory, not a profile file")
    if not stat.S_ISREG(info.st_mode):
        raise ProfileError(
            f"{path}: not a regular file ({_file_kind(info.st_mode)}); a profile is a TOML file"
        )
    if info.st_size > MAX_PROFILE_BYTES:
        raise ProfileError(
            f"{path}: {info.st_size} bytes is too large for a profile (at most "
            f"{MAX_PROFILE_BYTES} bytes)"
        )
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path}: too large for a profile (at most {MAX_PROFILE_BYTES} bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ProfileError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, column "
            f"{column}); profiles are TOML, which must be UTF-8"
        ) from exc
    if _sets_nothing(text):
        raise ProfileError(
            f"{path}: the profile sets nothing (an empty file would run every default); "
            "set at least a description, or run the shipped profile 'smoke'"
        )
    return parse(text, str(path), path.stem)


def _sets_nothing(text: str) -> bool:
    """True when the text is a TOML document with no key at all (blank or comments only)."""
    try:
        return not tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def parse(text: str, source: str = "<string>", name: str = "profile") -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # One line: the decoder's message carries the line and column.
        detail = " ".join(str(exc).split())
        raise ProfileError(f"{source}: malformed TOML: {detail}") from exc
    run = {k.name: k.default for k in RUN_KEYS}
    run_keys = {k.name: k for k in RUN_KEYS}
    sections: dict[str, dict[str, Any]] = {
        s: {k.name: k.default for k in keys} for s, keys in SECTIONS.items()
    }
    thresholds = default_thresholds()
    matrix: dict[str, tuple] = {}
    models: dict[str, Any] = {"repositories": [], "load": []}
    model: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in run_keys:
            run[key] = run_keys[key].check(source, value)
        elif key in SECTIONS:
            sections[key].update(tables.section(source, (key,), value, SECTIONS[key]))
        elif key == "thresholds":
            thresholds.update(tables.thresholds(source, value, thresholds))
        elif key == "matrix":
            matrix = tables.matrix(source, value)
        elif key == "models":
            models.update(tables.section(source, ("models",), value, MODELS_KEYS))
        elif key == "model":
            model = tables.model_tables(source, value)
        else:
            raise ProfileError(tables.unknown_top_level(source, key, list(run_keys)))
    checks.check_run(source, run, matrix)
    checks.check_units(source, run, matrix, thresholds, data.get("thresholds"))
    models, model = tables.user_models(source, models, model, run["strict_model_config"])
    checks.check_ray_resources(source, sections["ray"]["resources"])
    targets.check_args(source, sections["tritonserver"]["args"])
    targets.check_injections(source, run, matrix, sections["inject"])
    targets.check_attach(source, run, matrix, sections["tritonserver"], models)
    return Profile(
        name=name,
        source=source,
        text=text,
        run=run,
        timeouts=sections["timeouts"],
        sampling=sections["sampling"],
        inject=sections["inject"],
        thresholds=thresholds,
        matrix=matrix,
        models=models,
        model=model,
        attribution=sections["attribution"],
        ray=sections["ray"],
        tritonserver=sections["tritonserver"],
    )
