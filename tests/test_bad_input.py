"""Bad input, table-driven, through the real command line: one line, exit 2, nothing written.

A results database with two real runs of different profiles is made once for the module
(real Triton on CPU, a few seconds); every case then runs ``python -m soak.cli`` against it
and must answer with exactly one line ``soak: error: ...`` naming what is wrong, exit status
2, no traceback, and leave the database (and the case's own folder) byte-for-byte as it was.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import e2e

ROOT = Path(__file__).resolve().parent.parent
EXIT_ERROR = 2
DIR = object()  # a file entry that is a directory, not a file


def fifo(path: Path) -> None:
    os.mkfifo(path)


def foreign_db(path: Path) -> None:
    """Another program's SQLite file that happens to have a `runs` table."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO runs (name) VALUES ('not soak')")
    conn.commit()
    conn.close()


def soak_db_with_version(version: str, drop: tuple[str, ...] = ()):
    """A soak database with this schema_version, without the tables named in `drop` (as one
    made by an older soak)."""

    def make(path: Path) -> None:
        from soak.store import Store

        Store(path).close()
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode = DELETE")
        for table in drop:
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [version])
        conn.commit()
        conn.close()

    return make


# A second small profile, so that `soak compare 1 2` has runs of different profiles.
OTHER_PROFILE = 'description = "bad-input fixture"\nservers = 1\niterations = 2\nwarmup = 1\n'


@dataclass(frozen=True)
class Case:
    """One row: files written into the case's folder, the argv, what the error must name.

    ``{db}`` in argv and expected is the shared database, ``{tmp}`` the case's folder.
    ``no_gpu``: the case is about a GPU setting refused on a machine without a GPU.
    """

    id: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    files: dict[str, str | bytes | object | Callable[[Path], None]] = field(default_factory=dict)
    no_gpu: bool = False


def profile_case(id: str, text: str | bytes, *expect: str, no_gpu: bool = False) -> Case:
    """`soak run {tmp}/p.toml` with the given profile text; the error must name the file."""
    return Case(
        id,
        ("run", "{tmp}/p.toml", "--db", "{db}", "--no-progress"),
        ("{tmp}/p.toml", *expect),
        {"p.toml": text},
        no_gpu,
    )


def models_case(id: str, text: str, *expect: str, files: dict | None = None) -> Case:
    """A profile case whose folder also holds a model repository `repo/m` (and more files)."""
    case = profile_case(id, text, *expect)
    model = {"repo": DIR, "repo/m": DIR, "repo/m/config.pbtxt": 'backend: "python"\n'}
    return Case(case.id, case.argv, case.expect, {**case.files, **model, **(files or {})})


def cli_case(id: str, argv: str | tuple[str, ...], *expect: str, **kw) -> Case:
    args = tuple(argv.split()) if isinstance(argv, str) else argv
    return Case(id, args, expect, **kw)


RUN_SMOKE = ("run", "smoke", "--db", "{db}", "--no-progress")
RANGE_SERVERS, RANGE_ITERATIONS = "1 .. 64", "1 .. 1000000"
CHOICES_MEMORY = "'system', 'pinned', 'gpu'"

CASES = [
    # -- profiles: keys that do not exist --------------------------------------------------
    profile_case("unknown-top-level-key", "servrs = 2\n", "unknown key servrs", "servers"),
    profile_case("unknown-section-key", "[timeouts]\nloda = 5\n", "timeouts.loda", "load"),
    profile_case("unknown-section", "[extras]\nx = 1\n", "unknown key extras", "[timeouts]"),
    profile_case(
        "unknown-threshold-metric",
        "[thresholds.rss]\nenabled = false\n",
        "thresholds.rss",
        "rss_bytes",
    ),
    profile_case(
        "unknown-threshold-field",
        "[thresholds.rss_bytes]\nslope = 1.0\n",
        "thresholds.rss_bytes.slope",
        "slope_per_iteration",
    ),
    profile_case(
        "quoted-key-with-newline", '"serv\\ners" = 2\n', "unknown key 'serv\\ners'", "servers"
    ),
    # -- profiles: wrong types -------------------------------------------------------------
    profile_case(
        "string-for-int", 'servers = "2"\n', "servers must be an integer", "'2'", RANGE_SERVERS
    ),
    profile_case("float-for-int", "iterations = 2.5\n", "iterations must be an integer", "2.5"),
    profile_case(
        "int-for-bool",
        "[sampling]\nmalloc_trim = 1\n",
        "sampling.malloc_trim must be true or false",
        "got 1",
    ),
    profile_case(
        "list-for-string", 'description = ["a"]\n', "description must be a string", "a list"
    ),
    profile_case("bool-for-int", "servers = true\n", "servers must be an integer", "got true"),
    profile_case("bool-for-float", "[timeouts]\nload = false\n", "timeouts.load must be a number"),
    profile_case("table-for-int", "[servers]\n", "servers must be an integer", "a table"),
    profile_case("value-for-section", "timeouts = 5\n", "timeouts must be a table", "got 5"),
    profile_case(
        "value-for-threshold-table",
        "[thresholds]\nrss_bytes = 5\n",
        "thresholds.rss_bytes must be a table",
    ),
    profile_case(
        "cache-with-two-in-process-servers",
        'servers = 2\nresponse_cache = "local"\n',
        "response_cache = 'local' needs servers = 1 with target 'in_process'",
    ),
    profile_case(
        "cache-over-the-grpc-stream",
        'target = "tritonserver"\nprotocol = "grpc"\nstreaming = true\nresponse_cache = "local"\n',
        "streaming = true cannot go with response_cache = 'local'",
        "response output count mismatch",
    ),
    # -- profiles: out of range ------------------------------------------------------------
    profile_case(
        "perf-analyzer-in-process",
        'load_generator = "perf_analyzer"\n',
        "load_generator = 'perf_analyzer' needs target = 'tritonserver'",
    ),
    profile_case(
        "perf-analyzer-in-a-matrix-in-process",
        '[matrix]\nload_generator = ["soak", "perf_analyzer"]\n',
        "matrix.load_generator = 'perf_analyzer' needs target = 'tritonserver'",
    ),
    profile_case(
        "perf-analyzer-error-fraction",
        'target = "tritonserver"\nload_generator = "perf_analyzer"\n'
        'behaviour = "execute_raises"\nerror_fraction = 0.5\n',
        "error_fraction = 0.5 with load_generator = 'perf_analyzer'",
        "use error_fraction = 1",
    ),
    profile_case(
        "load-generator-unknown",
        'target = "tritonserver"\nload_generator = "locust"\n',
        "load_generator",
        "'soak', 'perf_analyzer'",
    ),
    profile_case("zero-servers", "servers = 0\n", "servers = 0", "out of range", RANGE_SERVERS),
    profile_case("huge-servers", "servers = 65\n", "servers = 65", RANGE_SERVERS),
    profile_case(
        "bignum-servers",
        "servers = 99999999999999999999999\n",
        "servers = 99999999999999999999999",
        RANGE_SERVERS,
    ),
    profile_case("negative-iterations", "iterations = -1\n", "iterations = -1", RANGE_ITERATIONS),
    profile_case(
        "huge-iterations", "iterations = 1000001\n", "iterations = 1000001", RANGE_ITERATIONS
    ),
    profile_case(
        "warmup-not-below-iterations",
        "iterations = 3\nwarmup = 3\n",
        "warmup = 3",
        "iterations = 3",
        "smaller than iterations",
    ),
    profile_case("zero-timeout", "[timeouts]\nload = 0\n", "timeouts.load = 0.0", "0.1 .. 86400"),
    profile_case(
        "negative-timeout", "[timeouts]\nstop = -5.0\n", "timeouts.stop = -5.0", "0.1 .. 86400"
    ),
    profile_case("nan-timeout", "[timeouts]\ninfer = nan\n", "timeouts.infer", "finite"),
    profile_case(
        "inject-fraction-above-one",
        "[inject]\nunreleased_response_fraction = 1.5\n",
        "inject.unreleased_response_fraction = 1.5",
        "0 .. 1",
    ),
    profile_case(
        "inject-client-bytes-in-process",
        "[inject]\nclient_bytes_per_request = 1024\n",
        "inject.client_bytes_per_request needs target = 'tritonserver'",
        "client is the servers' own process",
    ),
    profile_case(
        "inject-client-bytes-in-process-matrix-cell",
        '[matrix]\ntarget = ["tritonserver", "in_process"]\n'
        "[inject]\nclient_bytes_per_request = 1024\n",
        "inject.client_bytes_per_request needs matrix.target = 'tritonserver'",
    ),
    profile_case(
        "negative-threshold",
        "[thresholds.rss_bytes]\nslope_per_iteration = -1\n",
        "thresholds.rss_bytes.slope_per_iteration = -1.0",
        ">= 0",
    ),
    # -- profiles: choices -----------------------------------------------------------------
    profile_case(
        "bad-memory-type", 'memory_type = "cuda"\n', "memory_type = 'cuda'", CHOICES_MEMORY
    ),
    profile_case(
        "bad-instance-kind", 'instance_kind = "tpu"\n', "instance_kind = 'tpu'", "'cpu', 'gpu'"
    ),
    profile_case("bad-datatype", 'datatype = "fp64"\n', "datatype = 'fp64'", "'int32', 'fp32'"),
    # -- profiles: not a readable TOML file ------------------------------------------------
    profile_case("malformed-toml", "servers = = 2\n", "malformed TOML", "line 1"),
    profile_case("unterminated-string", 'description = "abc\nservers = 2\n', "malformed TOML"),
    profile_case("duplicate-key", "servers = 1\nservers = 2\n", "malformed TOML", "line 2"),
    profile_case(
        "non-utf8", b'description = "caf\xe9"\n', "not UTF-8", "0xe9 at line 1, column 19"
    ),
    Case(
        "directory-not-file",
        ("run", "{tmp}/dir.toml", "--db", "{db}"),
        ("{tmp}/dir.toml", "is a directory"),
        {"dir.toml": DIR},
    ),
    cli_case(
        "no-such-profile-name",
        "run no-such-profile --db {db}",
        "no-such-profile: no shipped profile of that name",
        "smoke",
    ),
    cli_case(
        "no-such-profile-path",
        "run {tmp}/none.toml --db {db}",
        "{tmp}/none.toml: no such profile file",
        "smoke",
    ),
    Case(
        "profile-is-a-fifo",
        ("run", "{tmp}/p.toml", "--db", "{db}"),
        ("{tmp}/p.toml", "not a regular file (a FIFO)"),
        {"p.toml": fifo},
    ),
    cli_case("profile-is-dev-zero", "run /dev/zero --db {db}", "/dev/zero", "a character device"),
    cli_case("profile-name-too-long", ("run", "p" * 300, "--db", "{db}"), "File name too long"),
    profile_case("profile-too-large", "#" * (2 << 20), "too large for a profile"),
    # -- profiles: matrix ------------------------------------------------------------------
    profile_case(
        "empty-matrix-list", "[matrix]\nservers = []\n", "matrix.servers", "non-empty list"
    ),
    profile_case(
        "matrix-not-a-list", "[matrix]\nservers = 2\n", "matrix.servers", "non-empty list"
    ),
    profile_case(
        "matrix-key-cannot-vary",
        "[matrix]\niterations = [2, 3]\n",
        "matrix.iterations cannot vary",
        "servers, memory_type",
    ),
    profile_case(
        "matrix-duplicate-values",
        "[matrix]\nservers = [1, 2, 1]\n",
        "matrix.servers",
        "1 more than once",
    ),
    profile_case(
        "matrix-value-out-of-range",
        "[matrix]\nservers = [1, 100]\n",
        "matrix.servers = 100",
        RANGE_SERVERS,
    ),
    profile_case(
        "empty-matrix-table", "[matrix]\n", "[matrix] is empty", "varies nothing", "servers"
    ),
    # -- profiles: keys that would do nothing -------------------------------------------------
    profile_case("empty-profile", "", "the profile sets nothing", "smoke"),
    profile_case("comments-only-profile", "# nothing yet\n\n", "the profile sets nothing"),
    profile_case(
        "reload-new-version-in-servers",
        "reload_new_version = true\n",
        "reload_new_version = true does nothing",
        "scenario = 'servers'",
    ),
    profile_case(
        "reload-new-version-in-matrix-without-reload",
        'reload_new_version = true\n[matrix]\nscenario = ["servers", "traffic"]\n',
        "reload_new_version = true does nothing",
        "matrix.scenario = 'servers', 'traffic'",
    ),
    profile_case(
        "slope-per-server-in-traffic",
        'scenario = "traffic"\n[thresholds.rss_bytes]\nslope_per_server = 1024\n',
        "thresholds.rss_bytes.slope_per_server does nothing",
        "scenario = 'traffic'",
        "slope_per_iteration",
    ),
    profile_case(
        "slope-per-model-load-in-traffic",
        'scenario = "traffic"\n[thresholds.uss_bytes]\nslope_per_model_load = 1\n',
        "thresholds.uss_bytes.slope_per_model_load does nothing",
    ),
    # -- profiles: the user's own models ([models], [model.<name>]) --------------------------
    models_case(
        "models-unknown-key", '[models]\nrepos = ["repo"]\n', "models.repos", "repositories"
    ),
    models_case(
        "models-repositories-not-a-list",
        '[models]\nrepositories = "repo"\n',
        "models.repositories must be a list",
    ),
    models_case(
        "models-repository-missing",
        '[models]\nrepositories = ["nowhere"]\n',
        "models.repositories[0] = 'nowhere'",
        "{tmp}/nowhere is not a directory",
    ),
    models_case(
        "models-load-without-repositories",
        '[models]\nload = ["m"]\n',
        "models.load names 'm'",
        "models.repositories is empty",
    ),
    models_case(
        "models-load-unknown-model",
        '[models]\nrepositories = ["repo"]\nload = ["ghost"]\n',
        "models.load: no model 'ghost'",
        "{tmp}/repo",
    ),
    models_case(
        "models-load-parent-path",
        '[models]\nrepositories = ["repo"]\nload = ["../outside"]\n',
        "models.load[0] = '../outside' is a path",
        files={"outside": DIR, "outside/config.pbtxt": 'backend: "python"\n'},
    ),
    models_case(
        "models-load-nested-path",
        '[models]\nrepositories = ["."]\nload = ["repo/m"]\n',
        "models.load[0] = 'repo/m' is a path",
    ),
    models_case(
        "model-not-in-load",
        '[models]\nrepositories = ["repo"]\nload = ["m"]\n[model.other]\nbatch_size = 2\n',
        "model.other is not in models.load",
    ),
    models_case(
        "model-unknown-key",
        '[models]\nrepositories = ["repo"]\nload = ["m"]\n[model.m]\nbatch = 2\n',
        "unknown key model.m.batch",
        "batch_size",
    ),
    models_case(
        "model-batch-size-zero",
        '[models]\nrepositories = ["repo"]\nload = ["m"]\n[model.m]\nbatch_size = 0\n',
        "model.m.batch_size = 0",
        "1 .. 1000000",
    ),
    models_case(
        "model-shape-negative",
        '[models]\nrepositories = ["repo"]\nload = ["m"]\n[model.m]\nshape = { X = [-1] }\n',
        "model.m.shape.X must be a non-empty list of positive integers",
    ),
    models_case(
        "model-input-data-missing",
        '[models]\nrepositories = ["repo"]\nload = ["m"]\n[model.m]\ninput_data = "d.json"\n',
        "model.m.input_data",
        "{tmp}/d.json: cannot read",
    ),
    models_case(
        "model-input-data-bad-b64",
        '[models]\nrepositories = ["repo"]\nload = ["m"]\n[model.m]\ninput_data = "d.json"\n',
        "model.m.input_data",
        "data[0].X.b64 is not base64",
        files={"d.json": '{"data": [{"X": {"b64": "%%"}}]}'},
    ),
    # -- profiles: GPU settings on this machine without a GPU ------------------------------
    profile_case(
        "gpu-memory-type",
        'memory_type = "gpu"\n',
        "memory_type = gpu",
        "needs an NVIDIA GPU",
        "memory_type = 'system'",
        no_gpu=True,
    ),
    profile_case(
        "pinned-memory-type",
        'memory_type = "pinned"\n',
        "memory_type = pinned",
        "needs an NVIDIA GPU",
        no_gpu=True,
    ),
    profile_case(
        "gpu-instance-kind",
        'instance_kind = "gpu"\n',
        "instance_kind = gpu",
        "needs an NVIDIA GPU",
        "instance_kind = 'cpu'",
        no_gpu=True,
    ),
    profile_case(
        "gpu-in-matrix",
        '[matrix]\nmemory_type = ["system", "gpu"]\n',
        "matrix.memory_type = gpu",
        "needs an NVIDIA GPU",
        no_gpu=True,
    ),
    profile_case(
        "gpu-inject",
        "[inject]\ngpu_bytes_per_server = 1024\n",
        "inject.gpu_bytes_per_server = 1024",
        "needs an NVIDIA GPU",
        no_gpu=True,
    ),
    cli_case(
        "shipped-gpu-profile",
        "run gpu --db {db}",
        "gpu.toml",
        "matrix.memory_type = gpu, pinned",
        "needs an NVIDIA GPU",
        no_gpu=True,
    ),
    # -- soak run: flags -------------------------------------------------------------------
    cli_case(
        "flag-servers-zero",
        (*RUN_SMOKE, "--servers", "0"),
        "--servers = 0",
        "out of range",
        RANGE_SERVERS,
    ),
    cli_case("flag-servers-huge", (*RUN_SMOKE, "--servers", "65"), "--servers = 65", RANGE_SERVERS),
    cli_case(
        "flag-iterations-negative",
        (*RUN_SMOKE, "--iterations", "-1"),
        "--iterations = -1",
        RANGE_ITERATIONS,
    ),
    cli_case(
        "flag-iterations-below-warmup",
        (*RUN_SMOKE, "--iterations", "1"),
        "smoke.toml with --iterations 1",
        "warmup = 1",
        "smaller than iterations",
    ),
    cli_case(
        "flag-memory-type-bogus",
        (*RUN_SMOKE, "--memory-type", "bogus"),
        "--memory-type = 'bogus'",
        CHOICES_MEMORY,
    ),
    cli_case(
        "flag-memory-type-gpu",
        (*RUN_SMOKE, "--memory-type", "gpu"),
        "--memory-type gpu",
        "needs an NVIDIA GPU",
        no_gpu=True,
    ),
    cli_case(
        "flag-servers-not-a-number",
        (*RUN_SMOKE, "--servers", "abc"),
        "'--servers'",
        "'abc' is not a valid integer",
    ),
    cli_case(
        "run-db-not-a-database",
        "run smoke --db {tmp}/junk.db --no-progress",
        "{tmp}/junk.db",
        "not a soak results database (not an SQLite file)",
        files={"junk.db": "not sqlite\n" * 20},
    ),
    cli_case(
        "run-db-foreign-sqlite",
        "run smoke --db {tmp}/other.db --no-progress",
        "{tmp}/other.db: not a soak results database",
        "other tables: runs",
        files={"other.db": foreign_db},
    ),
    cli_case(
        "run-db-newer-schema",
        "run smoke --db {tmp}/new.db --no-progress",
        "{tmp}/new.db: schema version 99",
        files={"new.db": soak_db_with_version("99")},
    ),
    cli_case(
        "runs-db-foreign-sqlite",
        "runs --db {tmp}/other.db",
        "{tmp}/other.db: not a soak results database",
        files={"other.db": foreign_db},
    ),
    cli_case(
        "runs-db-malformed-schema-version",
        "runs --db {tmp}/bad.db",
        "{tmp}/bad.db",
        "schema_version is 'x1'",
        files={"bad.db": soak_db_with_version("x1")},
    ),
    cli_case("runs-limit-negative", "runs --db {db} --limit -1", "'--limit'", "-1"),
    # -- triage commands -------------------------------------------------------------------
    cli_case(
        "query-delete",
        ("query", "DELETE FROM runs", "--db", "{db}"),
        "DELETE",
        "writes are not allowed",
    ),
    cli_case(
        "query-drop",
        ("query", "DROP TABLE samples", "--db", "{db}"),
        "DROP",
        "writes are not allowed",
    ),
    cli_case(
        "query-write-in-cte",
        ("query", "WITH x AS (SELECT 1) DELETE FROM runs", "--db", "{db}"),
        "DELETE from runs",
        "writes are not allowed",
    ),
    cli_case(
        "query-syntax-error",
        ("query", "SELEC 1", "--db", "{db}"),
        "query failed",
        "SELEC",
        "syntax error",
    ),
    cli_case(
        "query-missing-run",
        "query failures --param run=999 --db {db}",
        "no run 999",
        "runs go up to 2",
    ),
    cli_case(
        "query-bad-param", "query failures --param run --db {db}", "--param 'run'", "NAME=VALUE"
    ),
    cli_case("show-missing-run", "show 999 --db {db}", "no run 999", "runs go up to 2"),
    cli_case("show-not-a-run-id", "show abc --db {db}", "'abc' is not a run id"),
    cli_case("analyze-missing-run", "analyze 999 --db {db}", "no run 999", "runs go up to 2"),
    cli_case("report-missing-run", "report 999 --db {db} --json-file {tmp}/x.json", "no run 999"),
    cli_case(
        "compare-different-profiles",
        "compare 1 2 --db {db}",
        "runs 1 and 2 ran different profiles",
        "smoke",
        "--force",
    ),
    cli_case("compare-missing-run", "compare 1 999 --db {db}", "no run 999"),
    cli_case("compare-same-run", "compare 1 1 --db {db}", "same run (1)"),
    cli_case(
        "runs-db-not-a-database",
        "runs --db {tmp}/junk.db",
        "{tmp}/junk.db",
        "not a soak results database",
        files={"junk.db": "not sqlite\n" * 20},
    ),
    cli_case(
        "show-db-not-a-database",
        "show 1 --db {tmp}/junk.db",
        "{tmp}/junk.db",
        "not a soak results database",
        files={"junk.db": "not sqlite\n" * 20},
    ),
    cli_case(
        "query-db-not-a-database",
        ("query", "SELECT 1", "--db", "{tmp}/junk.db"),
        "{tmp}/junk.db",
        "not a soak results database",
        files={"junk.db": "not sqlite\n" * 20},
    ),
    cli_case(
        "ray-address-unreachable",
        "run smoke --db {db} --ray 127.0.0.1:1",
        "--ray 127.0.0.1:1",
        "no Ray cluster answers there",
    ),
    cli_case(
        "ray-client-address-unreachable",
        "run smoke --db {db} --ray ray://127.0.0.1:1",
        "--ray ray://127.0.0.1:1",
        "no Ray cluster answers there",
    ),
    cli_case("ray-address-malformed", "run smoke --db {db} --ray nonsense", "--ray nonsense"),
    cli_case(
        "attribute-tritonserver-processes-of-the-servers-scenario",
        "run {tmp}/p.toml --db {db} --attribute --no-progress",
        "--attribute",
        "no process lives at a quiet point",
        files={"p.toml": 'target = "tritonserver"\n'},
    ),
    models_case(
        "attach-remote-host",
        'target = "tritonserver"\nscenario = "traffic"\nservers = 1\n'
        '[models]\nrepositories = ["repo"]\nload = ["m"]\n'
        '[tritonserver]\nurl = "http://192.0.2.7:8000"\npid = 1\n',
        "tritonserver.url",
        "not loopback",
    ),
    models_case(
        "attach-servers-scenario",
        'target = "tritonserver"\nscenario = "servers"\nservers = 1\n'
        '[models]\nrepositories = ["repo"]\nload = ["m"]\n'
        '[tritonserver]\nurl = "http://127.0.0.1:8000"\npid = 1\n',
        "scenario = 'servers' starts and stops servers",
    ),
    models_case(
        "attach-pid-not-running",
        'target = "tritonserver"\nscenario = "traffic"\nservers = 1\n'
        '[models]\nrepositories = ["repo"]\nload = ["m"]\n'
        '[tritonserver]\nurl = "http://127.0.0.1:8000"\npid = 2147483000\n',
        "tritonserver.pid = 2147483000: no such process is running",
    ),
    models_case(
        "attach-pid-not-the-listener",
        'target = "tritonserver"\nscenario = "traffic"\nservers = 1\n'
        '[models]\nrepositories = ["repo"]\nload = ["m"]\n'
        '[tritonserver]\nurl = "http://127.0.0.1:1"\npid = 1\n',
        "tritonserver.pid = 1",
        "is not the process listening on http://127.0.0.1:1",
    ),
    cli_case(
        "attach-url-without-pid",
        "run smoke --db {db} --no-progress --url http://127.0.0.1:8000",
        "--url",
        "needs --pid (or tritonserver.pid)",
    ),
    cli_case(
        "attach-on-ray",
        ("run", "{tmp}/p.toml", "--db", "{db}", "--ray", "local", "--no-progress"),
        "--ray local",
        "loopback, which a Ray node cannot reach",
        files={
            "p.toml": 'target = "tritonserver"\nscenario = "traffic"\nservers = 1\n'
            '[models]\nrepositories = ["repo"]\nload = ["m"]\n'
            '[tritonserver]\nurl = "http://127.0.0.1:8000"\npid = 1\n',
            "repo": DIR,
            "repo/m": DIR,
            "repo/m/config.pbtxt": 'backend: "python"\n',
        },
    ),
    cli_case(
        "query-sites-on-an-old-database",
        "query sites --db {tmp}/old.db",
        "query sites",
        "no sites, site_samples table",
        files={"old.db": soak_db_with_version("1", drop=("site_samples", "sites"))},
    ),
    cli_case("runs-db-missing", "runs --db {tmp}/none.db", "{tmp}/none.db", "no results database"),
    # -- output paths: refused before the first iteration (or analysis), nothing stored -------
    cli_case(
        "run-junit-folder-missing",
        (*RUN_SMOKE, "--junit", "{tmp}/nodir/j.xml"),
        "--junit {tmp}/nodir/j.xml",
        "folder {tmp}/nodir does not exist",
    ),
    cli_case(
        "run-json-file-is-a-folder",
        (*RUN_SMOKE, "--json-file", "{tmp}/d"),
        "'--json-file'",
        "{tmp}/d' is a directory",
        files={"d": DIR},
    ),
    cli_case(
        "run-out-is-a-file",
        (*RUN_SMOKE, "--out", "{tmp}/f"),
        "'--out'",
        "{tmp}/f' is a file",
        files={"f": "x\n"},
    ),
    cli_case(
        "analyze-junit-folder-missing",
        "analyze 1 --db {db} --junit {tmp}/nodir/j.xml",
        "--junit {tmp}/nodir/j.xml",
        "does not exist",
    ),
    cli_case(
        "report-out-below-a-file",
        "report 1 --db {db} --out {tmp}/f/plots",
        "--out {tmp}/f/plots",
        "{tmp}/f is a file",
        files={"f": "x\n"},
    ),
    # -- run ids: negative or malformed, one line (never click's usage text) -------------------
    cli_case("show-negative-run-id", "show -1 --db {db}", "-1 is not a run id"),
    cli_case("analyze-negative-run-id", "analyze -1 --db {db}", "-1 is not a run id"),
    cli_case("report-negative-run-id", "report -2 --db {db} --out {tmp}/o", "-2 is not a run id"),
    cli_case("compare-negative-run-id", "compare 1 -1 --db {db}", "-1 is not a run id"),
    cli_case("analyze-not-a-run-id", "analyze abc --db {db}", "'abc' is not a valid integer"),
    cli_case("show-extra-argument", "show 1 2 --db {db}", "unexpected extra argument", "2"),
    cli_case("compare-missing-argument", "compare 1 --db {db}", "Missing argument"),
    # -- soak query: a runaway query ends at its time limit, one line ---------------------------
    cli_case(
        "query-runaway-timeout",
        (
            "query",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c",
            "--db",
            "{db}",
            "--timeout",
            "0.5",
        ),
        "query stopped after 0.5 s",
    ),
    cli_case(
        "query-timeout-negative",
        ("query", "SELECT 1", "--db", "{db}", "--timeout", "-1"),
        "'--timeout'",
    ),
]


def soak(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return e2e.soak(*args, timeout=timeout)


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under folder by content hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def db_state(db: Path) -> tuple[str, str]:
    """The database's content: its file and its write-ahead log, by hash.

    A read-only open of a WAL database may leave an empty -wal and a -shm (SQLite's
    shared-memory index, not data) beside it; an empty log counts as no log.
    """
    wal = db.with_name(db.name + "-wal")
    log = wal.read_bytes() if wal.exists() else b""
    return hashlib.sha256(db.read_bytes()).hexdigest(), hashlib.sha256(log).hexdigest()


def run_ids(db: Path) -> list[int]:
    # immutable: reading must not create -wal/-shm files or otherwise touch the database.
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def results_db(tmp_path_factory) -> Path:
    """A database holding run 1 (profile smoke) and run 2 (another profile), both real."""
    folder = tmp_path_factory.mktemp("bad-input-db")
    db = folder / "soak.db"
    other = tmp_path_factory.mktemp("bad-input-profile") / "other.toml"
    other.write_text(OTHER_PROFILE)
    for profile in ("smoke", str(other)):
        proc = soak("run", profile, "--iterations", "2", "--db", str(db), "--no-progress")
        # Two iterations after one of warm-up support no verdict: inconclusive (3) is expected.
        assert proc.returncode in (0, 1, 3), proc.stdout + proc.stderr
    assert run_ids(db) == [1, 2]
    return db


@pytest.fixture(scope="module")
def gpu_problem() -> str | None:
    from soak.runner.session import gpu_problem

    return gpu_problem()


def test_table_is_big_enough():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, results_db: Path, gpu_problem: str | None, tmp_path: Path):
    if case.no_gpu and gpu_problem is None:
        pytest.skip("this machine has a GPU, so the GPU setting is allowed here")
    for name, content in case.files.items():
        path = tmp_path / name
        if content is DIR:
            path.mkdir()
        elif callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    fill = {"db": str(results_db), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in case.argv]
    db_before, tmp_before = db_state(results_db), fingerprint(tmp_path)

    proc = soak(*argv)

    assert proc.returncode == EXIT_ERROR, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and proc.stderr.endswith("\n"), f"not one line: {proc.stderr!r}"
    line = lines[0]
    assert line.startswith("soak: error: ") and line[len("soak: error: ") :].strip(), line
    for expected in case.expect:
        assert expected.format(**fill) in line, f"{expected.format(**fill)!r} not in {line!r}"
    assert db_state(results_db) == db_before, "the database changed"
    assert fingerprint(tmp_path) == tmp_before, "the command wrote a file"
    assert run_ids(results_db) == [1, 2]
