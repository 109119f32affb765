"""The supervisor's side of allocation sites (soak.sampling.memray_sites): hold each quiet
point open long enough for memray to write a record inside it, remember when it was quiet,
and read the worker's capture into the sites tables at the end of the run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from soak.store import Store, event


class QuietWindows:
    """The quiet points of one run, for attribution; a no-op when attribution is off."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
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
        self.windows[iteration] = (began, time.time())

    def store_sites(self, store: Store, run_id: int, workdir: Path) -> list[dict[str, Any]]:
        """Read the worker's memray capture into the sites tables; the event that says how it
        went (none without attribution or capture). A failure costs the sites only."""
        from soak.sampling import memray_sites as sites

        capture = workdir / sites.CAPTURE_FILE
        if not self.enabled or not capture.exists():
            return []
        cfg = self.config
        try:
            started = time.monotonic()
            result = sites.read_sites(capture, self.windows, cfg["stack_depth"], cfg["top_sites"])
            site_rows, sample_rows = result.rows()
            store.write_sites(run_id, site_rows, sample_rows)
            message = (
                f"{len(result.sites)} allocation site(s) over {len(result.iterations)} quiet "
                f"point(s) from {result.capture_bytes} bytes of memray capture, read in "
                f"{time.monotonic() - started:.1f} s"
            )
        except Exception as exc:  # noqa: BLE001 - a torn capture (crash, hang) costs the sites only
            message = f"allocation sites not read: {type(exc).__name__}: {exc}"
        return [event("attribution", message)]
