"""What a stored run was configured with: its rules, warm-up, purpose and attribution
thresholds, read back from the profile text and config stored in its `runs` row.

Read by the judging of a run and by triage alike (show, compare), so that both see the
settings the run was judged with; nothing here judges or touches the database.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from soak import profile as profiles
from soak.analysis.site_verdict import SiteRule
from soak.analysis.verdict import MetricRule
from soak.errors import SoakError


def purpose_of(run: dict[str, Any]) -> str:
    """The run's profile `purpose` as stored in its config ('leaks' for runs made before the
    key existed)."""
    config = json.loads(run.get("config") or "{}")
    return str(config.get("run", {}).get("purpose") or "leaks")


def warmup_of(run: dict[str, Any]) -> int:
    """The profile's warm-up (iterations not judged) as stored in the run's config."""
    config = json.loads(run["config"] or "{}")
    return int(config.get("run", {}).get("warmup", 1))


def rules_for(run: dict[str, Any]) -> tuple[list[MetricRule], int]:
    """Rules and warm-up from the profile stored with the run."""
    try:
        prof = profiles.parse(run["profile_text"] or "", run["profile_source"] or "<stored>")
        thresholds = prof.thresholds
    except SoakError:
        thresholds = profiles.default_thresholds()
    rules = [rule for rule in thresholds.values() if rule.enabled]
    return rules, warmup_of(run)


def site_rule_for(run: dict[str, Any]) -> SiteRule:
    """The [attribution] thresholds stored with the run (defaults when absent)."""
    config = json.loads(run["config"] or "{}").get("attribution") or {}
    default = SiteRule()
    return SiteRule(
        float(config.get("slope_per_iteration", default.slope_per_iteration)),
        float(config.get("allocations_per_iteration", default.allocations_per_iteration)),
    )


def measured_rules(rules: list[MetricRule], series: dict[str, Any]) -> list[MetricRule]:
    """The rules a run is judged on: the client metrics only where the client was sampled
    apart from the servers (target tritonserver); in-process they are NULL and not judged."""
    return [
        r
        for r in rules
        if r.metric not in profiles.CLIENT_METRICS or np.isfinite(series[r.metric].values).any()
    ]
