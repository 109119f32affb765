"""The supervisor's side of allocation sites: hold each quiet point open long enough for the
tracer to write a record inside it, remember when it was quiet, and read the run's captures
into the sites tables at the end: the worker's memray capture (soak.sampling.memray_sites)
or, for a tritonserver target, one heaptrack capture per server process
(soak.sampling.heaptrack), summed by stack."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from soak.store import Store, event


class QuietWindows:
    """The quiet points of one run, for attribution; a no-op when attribution is off.

    Quiet points of the warm-up are not read: memray starts tracing after it, and heaptrack
    (tracing from each server's start) must be judged on the same iterations."""

    def __init__(self, config: dict[str, Any], warmup: int = 0) -> None:
        self.config = config
        self.warmup = warmup
        self.windows: dict[int, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.config.get("enabled"))

    def hold(self, iteration: int, began: float) -> None:
        """Sleep until the quiet point has lasted `MIN_QUIET_S`, then remember its window."""
        if not self.enabled:
            return
        from soak.sampling.memray_sites import MIN_QUIET_S

        time.sleep(max(0.0, began + MIN_QUIET_S - time.time()))
        if iteration >= self.warmup:
            self.windows[iteration] = (began, time.time())

    def store_sites(self, store: Store, run_id: int, workdir: Path) -> list[dict[str, Any]]:
        """Read the run's capture(s) into the sites tables; the event that says how it went
        (none without attribution or capture). A failure costs the sites only."""
        from soak.sampling import heaptrack
        from soak.sampling import memray_sites as sites

        if not self.enabled:
            return []
        cfg = self.config
        memray = workdir / sites.CAPTURE_FILE
        servers = heaptrack.captures_in(workdir / heaptrack.CAPTURE_DIR)
        if not memray.exists() and not servers:
            return []
        try:
            started = time.monotonic()
            if memray.exists():
                what = "memray capture"
                result = sites.read_sites(
                    memray, self.windows, cfg["stack_depth"], cfg["top_sites"]
                )
            else:
                what = f"heaptrack capture of {len(servers)} tritonserver process(es)"
                result = heaptrack.read_servers(
                    servers, self.windows, cfg["stack_depth"], cfg["top_sites"]
                )
            site_rows, sample_rows = result.rows()
            store.write_sites(run_id, site_rows, sample_rows)
            message = (
                f"{len(result.sites)} allocation site(s) over {len(result.iterations)} quiet "
                f"point(s) from {result.capture_bytes} bytes of {what}, read in "
                f"{time.monotonic() - started:.1f} s"
            )
        except Exception as exc:  # noqa: BLE001 - a torn capture (crash, hang) costs the sites only
            message = f"allocation sites not read: {type(exc).__name__}: {exc}"
        return [event("attribution", message)]
