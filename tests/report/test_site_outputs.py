"""Allocation sites in every output: analyze, show, the `sites` canned query, JSON, JUnit, plots.

The database is written through the store as a run with attribution would leave it (sites and
their per-quiet-point series); the attribution itself is proven on real runs in
tests/sampling/test_sites.py.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from soak.cli import main
from soak.store import Store

ITERATIONS = range(2, 32)


def attributed_run(path: Path) -> tuple[Store, int]:
    """A store at ``path`` holding one passed run with attribution on (warm-up 2)."""
    store = Store(path)
    run_id = store.create_run(
        {
            "profile": "attributed",
            "config": {"run": {"warmup": 2}, "attribution": {"enabled": True}},
            "status": "passed",
        }
    )
    return store, run_id


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "soak.db"
    store, run_id = attributed_run(path)
    rng = np.random.default_rng(3)
    sites = [
        {
            "site_id": 1,
            "stack_key": "a",
            "stack_text": "TRITONSERVER_ServerMetadata (libtritonserver)",
            "frames": [],
            "summary": "std::string <- TRITONSERVER_ServerMetadata <- metadata (soak/x.py:1)",
            "python_frame": "metadata (soak/x.py:1)",
            "soak_call": "metadata (soak/x.py:1)",
            "phase": "wait_ready",
            "thread": "python",
        },
        {
            "site_id": 2,
            "stack_key": "b",
            "stack_text": "triton::core::Cache (libtritonserver)",
            "frames": [],
            "summary": "triton::core::Cache (libtritonserver)",
            "python_frame": None,
            "soak_call": None,
            "phase": None,
            "thread": "native",
        },
    ]
    samples = []
    for k, it in enumerate(ITERATIONS):
        grow = 4096 * k + int(rng.normal(0, 100))
        flat = 90_000 + int(rng.normal(0, 2000))
        samples += [
            {"iteration": it, "site_id": 0, "live_bytes": grow + flat, "live_count": 50 + k},
            {"iteration": it, "site_id": 1, "live_bytes": grow, "live_count": 2 * k},
            {"iteration": it, "site_id": 2, "live_bytes": flat, "live_count": 50},
        ]
    store.write_sites(run_id, sites, samples)
    store.close()
    return path


def test_sites_reach_every_output(db, tmp_path):
    runner = CliRunner()
    analyzed = runner.invoke(main, ["analyze", "--db", str(db)])
    assert "GROWING SITE 1" in analyzed.output
    assert "TRITONSERVER_ServerMetadata" in analyzed.output
    assert "GROWING SITE 2" not in analyzed.output

    shown = runner.invoke(main, ["show", "latest", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "GROWING SITE 1" in shown.output
    detail = json.loads(runner.invoke(main, ["show", "latest", "--db", str(db), "--json"]).output)
    assert [s["metric"] for s in detail["sites"]][:1] == ["site:1"]
    assert detail["sites"][0]["phase"] == "wait_ready"
    assert all(f["kind"] != "site" for f in detail["findings"])

    rows = json.loads(runner.invoke(main, ["query", "sites", "--db", str(db), "--json"]).output)
    assert [(r["site"], r["verdict"]) for r in rows] == [(1, "leak"), (2, "pass")]
    assert rows[0]["live_bytes_per_iteration"] == pytest.approx(4096, rel=0.05)
    assert rows[0]["thread"] == "python" and rows[1]["thread"] == "native"

    out, js, junit = tmp_path / "report", tmp_path / "r.json", tmp_path / "r.xml"
    result = runner.invoke(
        main,
        [
            "report",
            "--db",
            str(db),
            "--out",
            str(out),
            "--json-file",
            str(js),
            "--junit",
            str(junit),
        ],
    )
    assert result.exit_code == 0, result.output
    (run,) = json.loads(js.read_text())["runs"]
    assert [(s["site_id"], s["kind"], s["verdict"]) for s in run["sites"]] == [
        (1, "site", "leak"),
        (2, "site", "pass"),
    ]
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["site:1"].find("failure") is not None
    assert cases["site:2"].find("failure") is None
    assert (out / "sites.png").stat().st_size > 0
    assert "| 1 | leak |" in (out / "sites.md").read_text()


def test_a_run_without_attribution_has_no_site_output(tmp_path):
    path = tmp_path / "soak.db"
    store = Store(path)
    store.create_run({"profile": "plain", "status": "passed"})
    store.close()
    result = CliRunner().invoke(main, ["analyze", "--db", str(path)])
    assert "site" not in result.output.lower()
    assert (
        json.loads(CliRunner().invoke(main, ["query", "sites", "--db", str(path), "--json"]).output)
        == []
    )


def test_growth_no_site_holds_is_noted_by_analyze_and_by_show(tmp_path):
    """RSS grows 300 KiB/iteration while every traced allocation together stays flat: the
    note that no live allocation holds it comes with the sites in `soak analyze` and in
    `soak show` (table and JSON)."""
    path = tmp_path / "soak.db"
    store, run_id = attributed_run(path)
    rng = np.random.default_rng(5)
    for i in range(32):
        rss = 200 * 2**20 + 300 * 1024 * i + int(rng.normal(0, 16 * 1024))
        row = {"iteration": i, "wall_s": 1.0, "server_lifecycles": 1, "failures": 0}
        sample = {"iteration": i, "kind": "quiet", "t": float(i), "rss_bytes": rss}
        store.write_iteration(run_id, row, [sample], [], [])
    flat = [90_000 + int(v) for v in rng.normal(0, 500, 30)]
    store.write_sites(
        run_id,
        [{"site_id": 1, "stack_key": "a", "frames": [], "summary": "f", "thread": "native"}],
        [
            {"iteration": it, "site_id": site, "live_bytes": flat[k], "live_count": 9}
            for k, it in enumerate(range(2, 32))
            for site in (0, 1)
        ],
    )
    store.close()
    runner = CliRunner()
    analyzed = runner.invoke(main, ["analyze", "--db", str(path)])
    assert "LEAK" in analyzed.output and "GROWING SITE" not in analyzed.output
    note = "held by no live allocation"
    assert "NOTE rss_bytes grows" in " ".join(analyzed.output.split())
    assert note in " ".join(analyzed.output.split())
    shown = runner.invoke(main, ["show", "latest", "--db", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "NOTE rss_bytes grows" in " ".join(shown.output.split())
    assert note in " ".join(shown.output.split())
    assert "allocation sites: none grows (1 traced site(s) judged)" in shown.output
    detail = json.loads(runner.invoke(main, ["show", "latest", "--db", str(path), "--json"]).output)
    assert len(detail["site_notes"]) == 1 and note in detail["site_notes"][0]
