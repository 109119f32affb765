"""One PNG per metric (series, fitted line, warm-up cut, threshold band) and a Markdown page."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from soak.analysis.site_verdict import SiteFinding, SiteSeries  # noqa: E402
from soak.analysis.verdict import Finding, Series  # noqa: E402
from soak.report.analyze import human  # noqa: E402


def plot_metric(series: Series, finding: Finding, warmup_iteration: int | None, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    x, y = series.iterations, series.values
    scale, unit = (2**20, "MiB") if series.metric.endswith("_bytes") else (1, "")
    ax.plot(x, y / scale, ".-", lw=0.8, ms=3, label=series.metric)
    if warmup_iteration is not None:
        ax.axvspan(x.min() if x.size else 0, warmup_iteration, color="0.85", label="warm-up")
    if math.isfinite(finding.slope) and math.isfinite(finding.baseline) and x.size:
        start = warmup_iteration if warmup_iteration is not None else x.min()
        xs = x[x >= start]
        if xs.size:
            intercept = finding.baseline - finding.slope * xs[0]
            ax.plot(
                xs,
                (intercept + finding.slope * xs) / scale,
                "r-",
                lw=1.2,
                label=f"fit {human(finding.slope, series.metric)}/iteration",
            )
            if finding.threshold:
                ax.fill_between(
                    xs,
                    finding.baseline / scale,
                    (finding.baseline + finding.threshold * (xs - xs[0])) / scale,
                    color="g",
                    alpha=0.15,
                    label="threshold band",
                )
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{series.metric} ({unit})" if unit else series.metric)
    ax.set_title(f"{series.metric}: {finding.verdict}")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    path = out / f"{series.metric}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    run_id: int, title: str, series: dict[str, Series], findings: list[Finding], out: Path
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# soak run {run_id}",
        "",
        title,
        "",
        "| metric | verdict | slope/iteration | growth | plot |",
        "|---|---|---|---|---|",
    ]
    for f in findings:
        s = series.get(f.metric)
        if s is None or not s.values.size:
            continue
        warm = int(s.iterations[f.warmup_cut]) if 0 < f.warmup_cut < s.iterations.size else None
        png = plot_metric(s, f, warm, out)
        lines.append(
            f"| {f.metric} | {f.verdict} | {human(f.slope, f.metric)} | "
            f"{human(f.total_growth, f.metric)} | [{png.name}]({png.name}) |"
        )
    lines += ["", "## Reasons", ""] + [
        f"- **{f.metric}** ({f.verdict}): {f.reason}" for f in findings
    ]
    page = out / "index.md"
    page.write_text("\n".join(lines) + "\n")
    return page


# -- allocation sites (attribution) ---------------------------------------------------------
SITES_PLOTTED = 8


def write_sites_report(
    series: dict[int, SiteSeries], findings: list[SiteFinding], notes: list[str], out: Path
) -> Path:
    """sites.png (live bytes of the top sites per quiet point) and sites.md (every judged site,
    growing first, with the notes on what no site can explain)."""
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    for f in findings[:SITES_PLOTTED]:
        s = series.get(f.site_id)
        if s is None:
            continue
        label = f"{f.site_id}: {f.summary[:70]} ({human(f.bytes.slope, 'live_bytes')}/it)"
        ax.plot(s.iterations, s.live_bytes / 1024, ".-", lw=0.8, ms=3, label=label)
    ax.set_xlabel("iteration (quiet points after the warm-up)")
    ax.set_ylabel("live bytes (KiB)")
    ax.set_title("allocation sites: bytes still live at each quiet point")
    ax.legend(loc="best", fontsize=6)
    fig.tight_layout()
    png = out / "sites.png"
    fig.savefig(png)
    plt.close(fig)
    lines = [
        "# allocation sites",
        "",
        f"![live bytes of the top sites]({png.name})",
        "",
        *[f"> {note}" for note in notes],
        "",
        "| site | verdict | live bytes/iteration | allocations/iteration | thread | where |",
        "|---|---|---|---|---|---|",
    ]
    for f in findings:
        lines.append(
            f"| {f.site_id} | {f.verdict} | {human(f.bytes.slope, 'live_bytes')} | "
            f"{f.count_slope:.3g} | {f.thread} | `{f.summary}` |"
        )
    page = out / "sites.md"
    page.write_text("\n".join(lines) + "\n")
    return page
