"""soak's C callbacks (soak.triton.native): built once per source and cached; a request's slot
hands its responses over in arrival order and completes only on the final response and the
release; an abandoned slot deletes what came and what comes; without a compiler the Python
callbacks serve every request, said in one line; real inferences through them are exact."""

from __future__ import annotations

import ctypes
import threading
import time
from ctypes import byref, c_int, c_int64, c_size_t, c_uint32, c_void_p

import numpy as np
import pytest

from soak.target.interface import MemoryType
from soak.triton import Server, ServerOptions, callbacks, capi, native
from soak.triton.callbacks import registry
from soak.triton.request import _free_inputs as free_inputs
from soak.triton.request import completions_for, in_flight
from soak.triton.returns import InferenceTimeout
from soak.workload.polling import wait_unloaded
from soak.workload.repos import write_model
from tests.conftest import write_model_with

pytestmark = pytest.mark.skipif(
    native._compiler() is None, reason="no C compiler (cc) on PATH: the Python callbacks only"
)

_DELETE_FN = ctypes.CFUNCTYPE(c_void_p, c_void_p)
_ERROR_DELETE_FN = ctypes.CFUNCTYPE(None, c_void_p)
_ERROR_NEW_FN = ctypes.CFUNCTYPE(c_void_p, c_int, ctypes.c_char_p)


@pytest.fixture
def isolated(tmp_path):
    """A private copy of the library (its own file, so its own globals), its Triton calls
    replaced by recorders: slots are driven here with made-up response handles."""
    path = native.build(tmp_path)
    lib = ctypes.CDLL(str(path))
    deleted: list[int] = []
    errors: list[bytes] = []
    fns = (
        _ERROR_NEW_FN(lambda _code, msg: errors.append(msg) or 99),
        _DELETE_FN(lambda r: deleted.append(r) or None),
        _ERROR_DELETE_FN(lambda _e: None),
    )
    lib.soak_native_init.argtypes = [c_void_p, c_void_p, c_void_p, c_int]
    lib.soak_native_init(*(ctypes.cast(f, c_void_p) for f in fns), capi.ERROR_INTERNAL)
    lib.soak_slot_new.restype = c_void_p
    for name in ("soak_slot_free", "soak_slot_abandon"):
        getattr(lib, name).argtypes = [c_void_p]
    lib.soak_slot_wait.argtypes = [c_void_p, ctypes.c_double]
    lib.soak_slot_take.argtypes = [c_void_p, ctypes.POINTER(c_void_p), c_size_t]
    lib.soak_slot_take.restype = c_size_t
    for name in ("soak_response", "soak_request_released"):
        getattr(lib, name).argtypes = [c_void_p, c_uint32, c_void_p]
    slots: list[int] = []

    def slot() -> int:
        s = lib.soak_slot_new()
        slots.append(s)
        return s

    yield lib, slot, deleted, errors, fns
    for s in slots:
        lib.soak_slot_free(s)


def _take(lib, slot: int) -> list[int]:
    out = (c_void_p * 8)()
    n = lib.soak_slot_take(slot, out, 8)
    return [out[i] for i in range(n)]


def test_the_build_is_cached_per_source_and_leaves_no_partial_file(tmp_path):
    first = native.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert native.build(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_a_slot_completes_on_the_final_response_and_the_release_only(isolated):
    lib, slot, deleted, _, _ = isolated
    s = slot()
    lib.soak_response(11, 0, s)
    assert lib.soak_slot_wait(s, 0.01) == 0
    lib.soak_response(12, capi.RESPONSE_FINAL, s)
    lib.soak_request_released(0, 0, s)  # not RELEASE_ALL: still held
    assert lib.soak_slot_wait(s, 0.01) == 0
    lib.soak_request_released(0, capi.RELEASE_ALL, s)
    assert lib.soak_slot_wait(s, 0.01) == 1
    assert (_take(lib, s), _take(lib, s), deleted) == ([11, 12], [], [])


def test_many_responses_come_out_in_order_once(isolated):
    lib, slot, _, _, _ = isolated
    s = slot()
    for r in range(1, 40):
        lib.soak_response(r, 0, s)
    lib.soak_response(None, capi.RESPONSE_FINAL, s)  # a decoupled model's empty final
    got = []
    while chunk := _take(lib, s):
        got += chunk
    assert got == list(range(1, 40))


def test_the_wait_times_out_and_wakes_when_another_thread_completes(isolated):
    lib, slot, _, _, _ = isolated
    s = slot()
    started = time.monotonic()
    assert lib.soak_slot_wait(s, 0.05) == 0
    assert time.monotonic() - started >= 0.045

    def complete() -> None:
        time.sleep(0.05)
        lib.soak_response(21, capi.RESPONSE_FINAL, s)
        lib.soak_request_released(0, capi.RELEASE_ALL, s)

    t = threading.Thread(target=complete)
    started = time.monotonic()
    t.start()
    assert lib.soak_slot_wait(s, 10.0) == 1
    t.join()
    assert time.monotonic() - started < 5


def test_an_abandoned_slot_deletes_what_came_and_what_comes(isolated):
    lib, slot, deleted, _, _ = isolated
    s = slot()
    lib.soak_response(31, 0, s)
    lib.soak_slot_abandon(s)
    assert deleted == [31]
    lib.soak_response(32, capi.RESPONSE_FINAL, s)
    assert (deleted, _take(lib, s)) == ([31, 32], [])


def test_the_allocator_answers_system_memory_whatever_was_preferred(isolated):
    lib, _, _, errors, _ = isolated
    buf, buf_userp, actual, actual_id = c_void_p(), c_void_p(7), c_int(9), c_int64(9)
    alloc = lib.soak_alloc
    alloc.argtypes = [c_void_p, ctypes.c_char_p, c_size_t, c_int, c_int64, c_void_p] + [
        c_void_p
    ] * 4
    alloc.restype = c_void_p
    refs = (byref(buf), byref(buf_userp), byref(actual), byref(actual_id))
    assert alloc(None, b"OUT", 64, capi.MEMORY_GPU, 1, None, *refs) is None
    assert buf.value and buf_userp.value is None and (actual.value, actual_id.value) == (0, 0)
    lib.soak_release_buffer.argtypes = [c_void_p, c_void_p, c_void_p, c_size_t, c_int, c_int64]
    assert lib.soak_release_buffer(None, buf, None, 64, 0, 0) == 0
    assert alloc(None, b"EMPTY", 0, 0, 0, None, *refs) is None and buf.value is None
    assert errors == []


@pytest.fixture
def reload_native(monkeypatch):
    """`native`'s choice made again under the test's environment, and again after it."""
    native._load.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    native._load.cache_clear()


def test_without_a_compiler_the_python_callbacks_serve_and_one_line_says_why(
    runtime, reload_native
):
    reload_native.setenv("CC", "/nonexistent/cc")
    assert native.completions() is None
    why = native.why_not()
    assert why is not None and "\n" not in why and "/nonexistent/cc" in why
    assert completions_for(MemoryType.SYSTEM) is registry()


def test_the_switch_turns_the_c_callbacks_off(runtime, reload_native):
    reload_native.setenv(native.ENV_SWITCH, "0")
    assert native.completions() is None and native.ENV_SWITCH in (native.why_not() or "")


def test_system_memory_goes_to_the_c_callbacks_and_other_memory_to_python(runtime):
    fast = native.completions()
    assert fast is not None and native.why_not() is None
    assert completions_for(MemoryType.SYSTEM) is fast
    assert completions_for(MemoryType.PINNED) is registry()
    assert completions_for(MemoryType.GPU) is registry()


@pytest.fixture(scope="module")
def addsub(runtime, tmp_path_factory):
    repo = tmp_path_factory.mktemp("native") / "repo"
    write_model(repo, "addsub")
    server = Server(
        ServerOptions((repo,), runtime.backends_dir, server_id="soak-native", exit_timeout_s=5)
    )
    server.load_model("addsub")
    yield server
    server.unload_model("addsub")
    server.close()


@pytest.mark.parametrize("kind", ["C", "Python"])
def test_real_inferences_are_exact_through_either_callbacks(addsub, reload_native, kind):
    if kind == "Python":
        reload_native.setenv(native.ENV_SWITCH, "0")
    rng = np.random.default_rng(5)
    a = rng.integers(-1000, 1000, size=(200, 1, 16)).astype(np.int32)
    b = rng.integers(-1000, 1000, size=(200, 1, 16)).astype(np.int32)
    seen: list[int] = []

    def on_result(i, out, err) -> bool:
        assert err is None
        assert np.array_equal(out["OUTPUT0"].array, a[i] + b[i])
        assert np.array_equal(out["OUTPUT1"].array, a[i] - b[i])
        assert out["OUTPUT0"].memory_type is MemoryType.SYSTEM
        seen.append(i)
        return True

    inputs = ({"INPUT0": a[i], "INPUT1": b[i]} for i in range(200))
    handed = addsub.infer_many("addsub", inputs, ["OUTPUT0", "OUTPUT1"], on_result, concurrency=4)
    assert handed == 200 and seen == list(range(200))
    assert (native.completions() is None) == (kind == "Python")


@pytest.mark.parametrize("kind", ["C", "Python"])
def test_a_timed_out_request_is_abandoned_and_its_late_response_deleted(
    runtime, tmp_path, reload_native, monkeypatch, kind
):
    if kind == "Python":
        reload_native.setenv(native.ENV_SWITCH, "0")
    lib = capi.loaded().lib
    deleted: list[int] = []  # by the Python callbacks (the C ones count in their slot)
    real = lib.TRITONSERVER_InferenceResponseDelete
    monkeypatch.setattr(
        lib, "TRITONSERVER_InferenceResponseDelete", lambda r: deleted.append(r) or real(r)
    )
    repo = tmp_path / "repo"
    write_model_with(repo, "slow", "time.sleep(1.0)")
    server = Server(ServerOptions((repo,), runtime.backends_dir, server_id="soak-slow"))
    try:
        server.load_model("slow")
        x = np.ones((1, 16), np.int32)
        before = in_flight()
        with pytest.raises(InferenceTimeout, match="did not complete within 0.2 s"):
            server.infer("slow", {"INPUT0": x, "INPUT1": x}, ["OUTPUT0"], timeout_s=0.2)
        assert in_flight() == before + 1  # abandoned: kept, never freed
        request, inf = callbacks.abandoned[-1]
        assert inf.completions.wait(inf, time.monotonic() + 20)  # the late answer came
        if kind == "C":
            assert inf.completions.state(inf) == dict(final=1, released=1, deleted=1, lost=0)
        else:
            assert len(deleted) == 1 and inf.pending == []
        # The test frees what soak leaves to Triton (the request pins its model): the model
        # then unloads, so nothing else held it.
        callbacks.abandoned.remove((request, inf))
        _free_left_to_triton(request, inf)
        server.unload_model("slow")
        assert wait_unloaded(server, ("slow",), timeout_s=20) == {}
    finally:
        server.close()


def _free_left_to_triton(request, inf) -> None:
    """Free, as the test's own act, a timed-out request soak left to Triton (it pins its
    model until then)."""
    assert capi.loaded().lib.TRITONSERVER_InferenceRequestDelete(request) is None
    inf.completions.done(inf)
    free_inputs(inf)


def test_a_burst_is_held_to_its_budget_not_each_request(runtime, tmp_path):
    """`timeout_s` is the burst's: requests of 0.3 s each, every one far within 0.8 s, still
    time out once 0.8 s have passed since the burst began (the lifecycle hands each burst
    what is left of its infer phase, which the supervisor's watchdog holds it to)."""
    repo = tmp_path / "repo"
    write_model_with(repo, "slowish", "time.sleep(0.3)")
    server = Server(ServerOptions((repo,), runtime.backends_dir, server_id="soak-budget"))
    try:
        server.load_model("slowish")
        x = np.ones((1, 16), np.int32)
        handed: list[int] = []
        before = len(callbacks.abandoned)
        with pytest.raises(InferenceTimeout):
            server.infer_many(
                "slowish",
                ({"INPUT0": x, "INPUT1": x} for _ in range(6)),
                ["OUTPUT0", "OUTPUT1"],
                lambda i, out, err: handed.append(i) or err is None,
                timeout_s=0.8,
            )
        assert 1 <= len(handed) < 6, handed  # some answered, the burst stopped on its budget
        for request, inf in callbacks.abandoned[before:]:  # what soak leaves to Triton
            assert inf.completions.wait(inf, time.monotonic() + 20)
            _free_left_to_triton(request, inf)
        del callbacks.abandoned[before:]
        server.unload_model("slowish")
        assert wait_unloaded(server, ("slowish",), timeout_s=20) == {}
    finally:
        server.close()


def test_threads_bursting_at_once_each_get_their_own_answers(addsub):
    """Several callers share the process's C callbacks (traffic at N > 1: one thread per
    server): each thread's responses stay its own, and every slot is freed once."""
    before = in_flight()
    rng = np.random.default_rng(9)
    data = rng.integers(-1000, 1000, size=(4, 300, 2, 1, 16)).astype(np.int32)
    wrong: list[str] = []

    def caller(t: int) -> None:
        a, b = data[t, :, 0], data[t, :, 1]

        def on_result(i, out, err) -> bool:
            if err is not None or not (
                np.array_equal(out["OUTPUT0"].array, a[i] + b[i])
                and np.array_equal(out["OUTPUT1"].array, a[i] - b[i])
            ):
                wrong.append(f"thread {t} request {i}: {err}")
            return True

        inputs = ({"INPUT0": a[i], "INPUT1": b[i]} for i in range(300))
        addsub.infer_many("addsub", inputs, ["OUTPUT0", "OUTPUT1"], on_result, concurrency=2)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert wrong == [] and in_flight() == before


def test_the_in_process_target_notes_python_callbacks_for_the_runs_start(
    runtime, tmp_path, reload_native
):
    """The worker's Hello carries the target's notes; the supervisor logs each one line."""
    from soak.runner.worker import hello_message
    from soak.target.inprocess import InProcessTarget

    target = InProcessTarget()
    assert target.prepare(tmp_path / "with").notes == ()
    reload_native.setenv("CC", "/nonexistent/cc")
    native._load.cache_clear()
    info = target.prepare(tmp_path / "without")
    assert info.notes == (native.why_not(),)
    assert hello_message(info, target).notes == [native.why_not()]
