"""The canned queries of `soak query NAME`: their SQL, parameters and what data they need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from soak.profile.schema import MATRIX_KEYS
from soak.profile.thresholds import COUNTER_METRICS, MEMORY_METRICS
from soak.store import PHASES


@dataclass(frozen=True)
class CannedQuery:
    """A named query of ``soak query NAME``; ``params`` maps each optional parameter to its
    meaning; ``needs`` says what data it needs when that is not always there."""

    name: str
    description: str
    sql: str
    params: dict[str, str] = field(default_factory=dict)
    needs: str = ""


JUDGED_METRICS = (*MEMORY_METRICS, *COUNTER_METRICS)


def _metric_case(alias: str) -> str:
    whens = " ".join(f"WHEN '{m}' THEN {alias}.{m}" for m in JUDGED_METRICS)
    return f"CASE m.metric {whens} END"


def _unit_slope(unit: str) -> str:
    # json.dumps writes NaN/Infinity, which SQLite's JSON functions reject: map them to null.
    text = (
        "REPLACE(REPLACE(REPLACE(f.slopes_per_unit, '-Infinity', 'null'), 'Infinity', 'null'), "
        "'NaN', 'null')"
    )
    return f"json_extract({text}, '$.{unit}')"


_GROWTH_SQL = f"""
WITH bounds AS (
  SELECT s.run_id, MIN(s.iteration) AS first_iteration, MAX(s.iteration) AS last_iteration
  FROM samples s JOIN runs r ON r.id = s.run_id
  WHERE s.kind = 'quiet'
    AND s.iteration >= COALESCE(json_extract(r.config, '$.run.warmup'), 1)
    AND (:run IS NULL OR s.run_id = :run)
  GROUP BY s.run_id
),
metrics(metric) AS (VALUES {", ".join(f"('{m}')" for m in JUDGED_METRICS)}),
pairs AS (
  SELECT b.run_id, b.first_iteration, b.last_iteration, m.metric,
         {_metric_case("f")} AS first_value, {_metric_case("l")} AS last_value
  FROM bounds b
  JOIN samples f ON f.run_id = b.run_id AND f.kind = 'quiet' AND f.iteration = b.first_iteration
  JOIN samples l ON l.run_id = b.run_id AND l.kind = 'quiet' AND l.iteration = b.last_iteration
  CROSS JOIN metrics m
  WHERE :metric IS NULL OR m.metric = :metric
)
SELECT p.run_id AS run, r.profile, r.cell, p.metric,
       p.first_iteration, p.last_iteration, p.first_value, p.last_value,
       p.last_value - p.first_value AS growth,
       ROUND((p.last_value - p.first_value) * 1.0
             / NULLIF(p.last_iteration - p.first_iteration, 0), 1) AS growth_per_iteration,
       fi.verdict, fi.total_growth AS finding_growth
FROM pairs p
JOIN runs r ON r.id = p.run_id
LEFT JOIN findings fi ON fi.run_id = p.run_id AND fi.metric = p.metric
WHERE p.first_value IS NOT NULL AND p.last_value IS NOT NULL
ORDER BY p.run_id, p.metric
"""


_PHASE_ORDER = ", ".join(f"('{p}', {k})" for k, p in enumerate(PHASES))


_PHASE_MEMORY_SQL = f"""
WITH quiet AS (
  SELECT run_id, id, iteration, rss_bytes FROM samples
  WHERE kind = 'quiet' AND (:run IS NULL OR run_id = :run)
),
during AS (
  -- Interval samples carry their iteration; where one has none (runs stored by earlier
  -- versions), it is that of the next quiet sample by id: a running minimum over the run's
  -- samples in descending id order (quiet iterations rise with id).
  SELECT run_id, phase, rss_bytes, kind,
         COALESCE(iteration, MIN(CASE WHEN kind = 'quiet' THEN iteration END)
                  OVER (PARTITION BY run_id ORDER BY id DESC ROWS UNBOUNDED PRECEDING)) AS iteration
  FROM samples
  WHERE kind IN ('quiet', 'interval') AND (:run IS NULL OR run_id = :run)
),
ranked AS (
  SELECT run_id, iteration, phase, rss_bytes,
         ROW_NUMBER() OVER (PARTITION BY run_id, iteration, phase ORDER BY rss_bytes) AS k,
         COUNT(*) OVER (PARTITION BY run_id, iteration, phase) AS n
  FROM during
  WHERE kind = 'interval' AND phase IS NOT NULL AND rss_bytes IS NOT NULL
),
phase_median AS (
  SELECT run_id, iteration, phase, AVG(rss_bytes) AS median_rss, MAX(n) AS samples
  FROM ranked WHERE k IN ((n + 1) / 2, (n + 2) / 2)
  GROUP BY run_id, iteration, phase
  UNION ALL
  -- Runs stored by later versions keep each phase's interval samples as one row.
  SELECT run_id, iteration, phase, rss_median_bytes, samples FROM phase_samples
  WHERE phase IS NOT NULL AND rss_median_bytes IS NOT NULL AND (:run IS NULL OR run_id = :run)
),
phase_order(phase, ordinal) AS (VALUES {_PHASE_ORDER}),
per_iteration AS (
  SELECT m.run_id, m.iteration, m.phase, o.ordinal, m.samples,
         m.median_rss - before.rss_bytes AS added,
         after.rss_bytes - before.rss_bytes AS kept
  FROM phase_median m
  JOIN phase_order o ON o.phase = m.phase
  JOIN quiet before ON before.run_id = m.run_id AND before.iteration = m.iteration - 1
  JOIN quiet after ON after.run_id = m.run_id AND after.iteration = m.iteration
),
stepped AS (
  SELECT *, added - COALESCE(LAG(added) OVER (PARTITION BY run_id, iteration
                                              ORDER BY ordinal), 0) AS step
  FROM per_iteration
)
SELECT run_id AS run, phase, COUNT(*) AS iterations, SUM(samples) AS samples,
       CAST(ROUND(AVG(added)) AS INTEGER) AS added_bytes,
       CAST(ROUND(AVG(step)) AS INTEGER) AS step_bytes,
       CAST(MAX(added) AS INTEGER) AS max_added_bytes,
       CAST(ROUND(AVG(kept)) AS INTEGER) AS kept_bytes,
       ROUND(100.0 * AVG(kept) / NULLIF(AVG(added), 0), 1) AS kept_pct
FROM stepped
GROUP BY run_id, phase
ORDER BY run_id, MIN(ordinal)
"""


def _run_value(key: str) -> str:
    """A run's value of a matrix key: its runs column, or for keys newer than some databases
    (scenario, behaviour, error_fraction) the profile stored with the run."""
    if key in ("servers", "memory_type", "instance_kind", "inferences_per_model", "datatype"):
        return f"r.{key}"
    return f"json_extract(r.config, '$.run.{key}')"


_FACTOR_COLUMNS = ",\n       ".join(
    f"COALESCE(json_extract(r.cell, '$.{k}'), {_run_value(k)}) AS {k}" for k in MATRIX_KEYS
)


_MATRIX_FACTORS_SQL = f"""
SELECT r.matrix, f.metric, r.id AS run,
       {_FACTOR_COLUMNS},
       f.verdict, f.slope AS per_iteration,
       {_unit_slope("server")} AS per_server,
       {_unit_slope("model_load")} AS per_model_load,
       {_unit_slope("inference")} AS per_inference
FROM findings f JOIN runs r ON r.id = f.run_id
WHERE r.matrix IS NOT NULL AND f.slope IS NOT NULL AND f.kind IS NOT 'site'
  AND (:matrix IS NULL OR r.matrix = :matrix)
  AND (:metric IS NULL OR f.metric = :metric)
  AND r.id = (SELECT MAX(r2.id) FROM runs r2
              WHERE r2.matrix = r.matrix AND r2.cell = r.cell AND (:upto IS NULL OR r2.id <= :upto))
ORDER BY r.matrix, f.metric, f.slope DESC, r.id
"""


_LEFTOVERS_SQL = """
SELECT r.id AS run, r.profile, r.cell, r.status,
       SUM(e.kind = 'leftover_stub') AS leftover_stubs,
       SUM(e.kind = 'leftover_shm') AS leftover_shm,
       SUM(e.kind = 'leftover_port') AS leftover_ports,
       (SELECT e2.message FROM events e2
        WHERE e2.run_id = r.id AND e2.kind IN ('leftover_stub', 'leftover_shm', 'leftover_port')
        ORDER BY e2.id LIMIT 1) AS first_message
FROM events e JOIN runs r ON r.id = e.run_id
WHERE e.kind IN ('leftover_stub', 'leftover_shm', 'leftover_port')
  AND (:run IS NULL OR r.id = :run)
GROUP BY r.id
ORDER BY r.id
"""


_FAILURES_SQL = """
SELECT e.run_id AS run, r.profile, r.cell, e.phase, e.instance, COUNT(*) AS failures,
       MIN(e.iteration) AS first_iteration, MAX(e.iteration) AS last_iteration,
       (SELECT e2.message FROM events e2
        WHERE e2.run_id = e.run_id AND e2.kind = 'failure'
          AND e2.phase IS e.phase AND e2.instance IS e.instance
        ORDER BY e2.id LIMIT 1) AS first_message
FROM events e JOIN runs r ON r.id = e.run_id
WHERE e.kind = 'failure' AND (:run IS NULL OR e.run_id = :run)
GROUP BY e.run_id, e.phase, e.instance
ORDER BY e.run_id, failures DESC, e.phase, e.instance
"""


_TRITON_WARNINGS_SQL = """
WITH w AS (
  SELECT run_id, kind,
         CASE WHEN instr(message, '] ') > 0
                   AND substr(message, 1, 1) IN ('W', 'E', 'I', 'F')
                   AND substr(message, 2, 4) GLOB '[0-9][0-9][0-9][0-9]'
              THEN trim(substr(message, instr(message, '] ') + 2))
              ELSE trim(message) END AS message,
         COALESCE(count, 1) AS n
  FROM events
  WHERE kind IN ('triton_warning', 'triton_error') AND (:run IS NULL OR run_id = :run)
)
SELECT CASE kind WHEN 'triton_error' THEN 'error' ELSE 'warning' END AS level, message,
       SUM(n) AS count, COUNT(DISTINCT run_id) AS runs,
       MIN(run_id) AS first_run, MAX(run_id) AS last_run
FROM w
GROUP BY kind, message
ORDER BY kind = 'triton_warning', count DESC, message
"""


# Allocation sites (attribution): each kept site with its finding and what is live at the end.
_SITES_SQL = """
SELECT s.run_id AS run, s.site_id AS site, f.verdict,
       f.slope AS live_bytes_per_iteration, f.slope_low, f.total_growth AS growth_bytes,
       (SELECT ss.live_bytes FROM site_samples ss WHERE ss.run_id = s.run_id
          AND ss.site_id = s.site_id ORDER BY ss.iteration DESC LIMIT 1) AS live_bytes_at_end,
       (SELECT ss.live_count FROM site_samples ss WHERE ss.run_id = s.run_id
          AND ss.site_id = s.site_id ORDER BY ss.iteration DESC LIMIT 1) AS live_count_at_end,
       s.thread, s.phase, s.soak_call, s.summary
FROM sites s
LEFT JOIN findings f ON f.run_id = s.run_id AND f.metric = 'site:' || s.site_id
WHERE (:run IS NULL OR s.run_id = :run) AND (:verdict IS NULL OR f.verdict = :verdict)
ORDER BY s.run_id, f.verdict = 'leak' DESC, f.slope DESC
"""

_RUN = "only this run (an id or 'latest'; default: all runs)"


CANNED: dict[str, CannedQuery] = {
    q.name: q
    for q in (
        CannedQuery(
            "growth",
            "Growth per metric per run: first vs last quiet sample after the warm-up, "
            "with the finding's verdict and median-based growth.",
            _GROWTH_SQL,
            {"run": _RUN, "metric": "only this metric (e.g. rss_bytes)"},
        ),
        CannedQuery(
            "phase-memory",
            "Which lifecycle phase adds memory the quiet point does not give back: median RSS "
            "during each phase minus the preceding quiet RSS, and what the next quiet point kept.",
            _PHASE_MEMORY_SQL,
            {"run": _RUN},
            needs="interval samples: run a profile with [sampling] sample_interval_ms > 0; the "
            "first iteration has no preceding quiet point and is left out",
        ),
        CannedQuery(
            "matrix-factors",
            "Slope per iteration, per server, per model load and per inference for each cell "
            "of a matrix (latest run per cell), with the cell's factors as columns.",
            _MATRIX_FACTORS_SQL,
            {
                "matrix": "only this matrix (profile name)",
                "metric": "only this metric",
                "upto": "the matrix as it stood at this run id (each cell's latest run <= it)",
            },
            needs="findings of matrix runs (soak run on a profile with a [matrix] table)",
        ),
        CannedQuery(
            "leftovers",
            "Runs that left stub processes, shared-memory regions or listening ports behind, "
            "with counts.",
            _LEFTOVERS_SQL,
            {"run": _RUN},
        ),
        CannedQuery(
            "failures",
            "Validation failures by run, phase and instance, with the first message.",
            _FAILURES_SQL,
            {"run": _RUN},
        ),
        CannedQuery(
            "sites",
            "Allocation sites of attributed runs: live bytes per iteration (Theil-Sen), "
            "growth, what is live at the end, thread (python or native), phase and soak call.",
            _SITES_SQL,
            {"run": _RUN, "verdict": "only sites judged so (leak, pass, inconclusive)"},
            needs="a run with attribution (soak run --attribute, or [attribution] enabled)",
        ),
        CannedQuery(
            "triton-warnings",
            "Distinct Triton warnings and errors (log prefix stripped) with counts and runs.",
            _TRITON_WARNINGS_SQL,
            {"run": _RUN},
        ),
    )
}


def canned_list() -> list[dict[str, Any]]:
    """The canned queries as rows (`soak query --list --json/--csv`)."""
    return [
        {
            "name": q.name,
            "description": q.description,
            "params": ", ".join(q.params) or None,
            "needs": q.needs or None,
        }
        for q in CANNED.values()
    ]
