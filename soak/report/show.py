"""`soak show` on the console: a run's header, findings, events by kind and phase timings."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from soak.analysis.site_verdict import SiteFinding
from soak.formatting import cell_label, duration, human
from soak.profile.schema import MATRIX_KEYS
from soak.report.analyze import STATUS_STYLE, findings_table
from soak.store.rows import finding_from_row, slopes_from_json
from soak.triage.lookup import iso_time, local_time, parse_cell, run_duration
from soak.triage.show import SERVER_SLOPE_METRICS, RunDetail, site_finding_from_row


def detail_json(detail: RunDetail) -> dict[str, Any]:
    """`soak show --json`: the header with times as ISO text, findings and sites with their
    per-unit slopes as numbers, events and phases as plain data."""
    header = {k: v for k, v in detail.run.items() if k not in ("profile_text", "config")}
    header["cell"] = parse_cell(detail.run.get("cell")) or None
    for key in ("started_at", "ended_at", "heartbeat_at"):
        header[key.replace("_at", "")] = iso_time(detail.run.get(key))
    header["stored_status"] = detail.run.get("status")
    header["status"] = detail.status
    header["abandoned_reason"] = detail.abandoned_reason or None
    header["verdict_note"] = detail.verdict_note or None
    header["duration_s"] = run_duration(detail.run)
    findings, sites = [], []
    for rows, out in ((detail.findings, findings), (detail.sites, sites)):
        for row in rows:
            row = dict(row)
            row["slopes_per_unit"] = slopes_from_json(row.get("slopes_per_unit"))
            out.append(row)
    return {
        "run": header,
        "findings": findings,
        "events": [
            {
                "kind": g.kind,
                "count": g.count,
                "distinct": g.distinct,
                "messages": [m.__dict__ for m in g.messages],
            }
            for g in detail.events
        ],
        "phases": [p.__dict__ for p in detail.phases],
        # only for a run with attribution, so that the JSON of any other run is unchanged
        **({"sites": sites, "site_notes": detail.site_notes} if sites else {}),
        **({"work": detail.work} if detail.work else {}),
        # only where server processes were sampled apart (target tritonserver)
        **({"servers": [s.__dict__ for s in detail.servers]} if detail.servers else {}),
    }


def print_run_detail(console: Console, detail: RunDetail) -> None:
    """Everything `soak show` prints about one run, in order."""
    _print_header(console, detail)
    _print_findings(console, detail)
    _print_servers(console, detail)
    _print_events(console, detail)
    _print_phases(console, detail)


def _print_servers(console: Console, detail: RunDetail) -> None:
    """Each server process apart (target tritonserver): nothing for an in-process run."""
    if not detail.servers:
        return
    console.print()
    table = Table(title="per server: slope per iteration after the warm-up")
    heads = ("server", "pid", "samples", "rss", "uss", "fds", "threads", "stubs", "stub rss")
    for col in heads:
        table.add_column(col, justify="left" if col == "server" else "right")
    for s in detail.servers:
        cells = [human(s.slopes.get(m), m) for m in SERVER_SLOPE_METRICS]
        pids = ", ".join(map(str, s.pids))
        table.add_row(str(s.server), pids, str(s.iterations), *cells)
    console.print(table)


def _print_header(console: Console, detail: RunDetail) -> None:
    run = detail.run
    cell = parse_cell(run.get("cell"))
    status = Text(detail.status, style=STATUS_STYLE.get(detail.status, ""))
    if detail.abandoned_reason:
        status.append(f" ({detail.abandoned_reason})")
    elif run.get("reason"):
        status.append(f" ({run['reason']})")
    lines: list[tuple[str, Text | str]] = [
        ("profile", Text(run["profile"] + (f" [{cell_label(cell, MATRIX_KEYS)}]" if cell else ""))),
        ("status", status),
        (
            "verdict",
            Text(
                (run.get("verdict") or "- (not analysed)")
                + (f" ({detail.verdict_note})" if detail.verdict_note else "")
            ),
        ),
        (
            "host",
            Text(
                f"{run.get('host') or '-'} ({run.get('cpu_count') or '?'} CPUs"
                + (f", {run['gpu_name']}" if run.get("gpu_name") else "")
                + ")"
            ),
        ),
        ("triton", Text(run.get("triton_version") or "-")),
        (
            "workload",
            Text(
                f"{run.get('servers')} servers, {run.get('memory_type')} memory, "
                f"{run.get('instance_kind')} instances, "
                f"{run.get('inferences_per_model')} inferences per model, "
                f"{run.get('datatype')}"
            ),
        ),
        ("iterations", Text(f"{run.get('iterations_done')}/{run.get('iterations_planned')}")),
        *([("work", Text(work_line(detail.work)))] if detail.work else []),
        ("started", Text(local_time(run.get("started_at")))),
        ("ended", Text(local_time(run.get("ended_at")))),
        ("heartbeat", Text(local_time(run.get("heartbeat_at")))),
        ("duration", Text(duration(run_duration(run)))),
    ]
    console.print(Text(f"run {run['id']}", style="bold"))
    for key, value in lines:
        console.print(Text(f"  {key:<11}") + (value if isinstance(value, Text) else Text(value)))


def work_line(work: dict[str, int]) -> str:
    """Requests and what they brought back: responses per request (a decoupled model sends
    any number) and the response cache's hits and insertions."""
    requests, responses = work["inferences"], work["responses"]
    per = f" ({responses / requests:.3g} per request)" if requests else ""
    line = f"{requests} inferences, {responses} responses{per}"
    if work["cache_hits"] or work["cache_insertions"]:
        line += f"; response cache {work['cache_hits']} hits, {work['cache_insertions']} insertions"
    return line


def _print_findings(console: Console, detail: RunDetail) -> None:
    console.print()
    if not detail.findings:
        console.print(f"no findings (run `soak analyze {detail.run['id']}` to judge this run)")
        return
    findings = [finding_from_row(row) for row in detail.findings]
    measured = [f for f in findings if f.verdict != "no_data"]
    sites = [site_finding_from_row(row) for row in detail.sites]
    if measured:
        console.print(findings_table(measured, title="findings", sites=sites))
    unmeasured = [f.metric for f in findings if f.verdict == "no_data"]
    if unmeasured:
        console.print(Text(f"no data (not measured here): {', '.join(unmeasured)}", style="dim"))
    for f in findings:
        if f.verdict == "leak":
            line = Text("LEAK ", style="bold red")
            line.append(f.reason)
            if f.growth_started_at is not None:
                line.append(f" Growth began at iteration {f.growth_started_at + 1}.")
            console.print(line, soft_wrap=True)
    _print_sites(console, sites, detail.site_notes)


def _print_sites(console: Console, sites: list[SiteFinding], notes: list[str]) -> None:
    """Allocation sites (attribution): where the growth is held, and what no site explains."""
    for site in sites:
        if site.verdict == "leak":
            line = Text(f"GROWING SITE {site.site_id} ", style="bold red") + Text(site.reason)
            console.print(line, soft_wrap=True)
    for note in notes:
        console.print(Text("NOTE ", style="yellow") + Text(note), soft_wrap=True)
    if sites and not any(s.verdict == "leak" for s in sites):
        console.print(f"allocation sites: none grows ({len(sites)} traced site(s) judged)")


def _print_events(console: Console, detail: RunDetail) -> None:
    console.print()
    if not detail.events:
        console.print("no events")
        return
    console.print(Text("events", style="bold"))
    for group in detail.events:
        more = f", {group.distinct} distinct" if group.distinct != group.count else ""
        console.print(Text(f"  {group.kind}: {group.count}{more}", style="bold"))
        for m in group.messages:
            where = ", ".join(
                part
                for part in (
                    f"iteration {m.iteration + 1}" if m.iteration is not None else "",
                    f"instance {m.instance}" if m.instance is not None and m.instance >= 0 else "",
                    f"phase {m.phase}" if m.phase else "",
                )
                if part
            )
            prefix = f"{m.count}x " if m.count > 1 else ""
            if group.kind in ("stack_dump", "crash", "signal", "error") and "\n" in m.text:
                console.print(Text(f"    {prefix}" + (f"[{where}]" if where else "")))
                console.print(Text(m.text.rstrip("\n")), soft_wrap=True)
            else:
                console.print(
                    Text(f"    {prefix}{m.text}" + (f" [{where}]" if where else "")),
                    soft_wrap=True,
                )
        if group.distinct > len(group.messages):
            console.print(
                Text(
                    f"    ... {group.distinct - len(group.messages)} more distinct message(s); "
                    "see soak query",
                    style="dim",
                )
            )


def _print_phases(console: Console, detail: RunDetail) -> None:
    console.print()
    if not detail.phases:
        console.print("no phase timings (no iteration completed)")
        return
    table = Table(title="phase timings (slowest instance)")
    for col in ("phase", "iterations", "median", "max"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for p in detail.phases:
        table.add_row(p.phase, str(p.iterations), f"{p.median_s:.3f} s", f"{p.max_s:.3f} s")
    console.print(table)
