"""What is said about a run from its findings: the order findings are listed in, and the one
line that says why an inconclusive verdict is inconclusive.

Pure, like the rest of the analysis: `soak analyze` says it from the findings it has just
made, `soak show` from the stored ones, and both say the same.
"""

from __future__ import annotations

from soak.analysis.verdict import Finding
from soak.analysis.warmup import MIN_POINTS

#: How findings are listed everywhere: leaks first, then inconclusive, pass, no data.
VERDICT_ORDER = {"leak": 0, "inconclusive": 1, "pass": 2, "no_data": 3}


def verdict_rank(verdict: str | None) -> int:
    """A finding's place in listings (:data:`VERDICT_ORDER`; unknown verdicts last)."""
    return VERDICT_ORDER.get(verdict or "", len(VERDICT_ORDER))


def verdict_note(
    findings: list[Finding], verdict: str, purpose: str, iterations: int, warmup: int
) -> str:
    """One line saying why a verdict is inconclusive ('' for any other verdict), so that a
    newcomer's short run does not read as a failure; for a machinery check, that it passed."""
    if verdict != "inconclusive":
        return ""
    open_ = [f for f in findings if f.verdict in ("inconclusive", "no_data")]
    if open_ and all(f.n_used < MIN_POINTS for f in open_):
        why = (
            f"{iterations} iterations: a verdict needs at least {MIN_POINTS} after the "
            f"warm-up ({warmup}); run the cpu profile for one"
        )
    else:
        first = next((f for f in open_ if f.verdict == "inconclusive"), open_[0] if open_ else None)
        why = f"{len(open_)} of {len(findings)} metrics undecided" + (
            f"; first: {first.reason}" if first else ""
        )
    if purpose == "machinery":
        return f"machinery check: {why}"
    return f"inconclusive: {why}"
