"""What a supervised run tells its callers: a view per quiet point and per phase, the run's
outcome, and what its run row says of the profile. Plain records, so that progress displays
and the Ray driver import them without the supervisor."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from soak import __version__
from soak.phases import PHASES
from soak.runner import protocol as proto
from soak.runner.run_keys import run_key_columns

if TYPE_CHECKING:
    from soak.profile import Profile


@dataclass
class IterationView:
    """What progress displays need after each quiet point."""

    iteration: int
    iterations: int
    wall_s: float
    rss_bytes: int | None
    rss_delta_bytes: int | None
    fds: int | None
    threads: int | None
    failures_total: int
    phase_max_s: dict[str, float]
    failures: list[dict[str, Any]]


@dataclass(frozen=True)
class PhaseView:
    """Where an iteration stands, for a progress display between quiet points: the phase an
    instance just entered and the phase every server of this iteration is in."""

    iteration: int
    iterations: int
    servers: int
    phase: str
    phases: dict[int, str]  # instance -> the phase it is in

    @property
    def servers_done(self) -> int:
        """Servers at the last phase of their lifecycle (delete, which takes milliseconds)."""
        return sum(1 for p in self.phases.values() if p == PHASES[-1])


@dataclass
class RunOutcome:
    run_id: int
    status: str  # running statuses of store.RUN_STATUSES, minus the verdict
    reason: str
    iterations_done: int
    failures: int
    events: list[dict[str, Any]] = field(default_factory=list)


def run_columns(profile: Profile) -> dict[str, Any]:
    """What a run row says of the profile it ran: the same for a run supervised here and for a
    Ray cell that never got to run."""
    return {
        "profile": profile.name,
        "profile_source": profile.source,
        "profile_text": profile.text,
        **run_key_columns(profile.run),
        "soak_version": __version__,
        "config": asdict(proto.ProfileMessage.of(profile)),
    }
