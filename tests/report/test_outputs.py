"""`soak report`: PNGs and a Markdown page, JUnit XML and JSON, read from a stored run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from soak.bench.analysis import write_synthetic_run
from soak.cli import main
from soak.store import Store


def test_report_writes_plots_junit_and_json_without_touching_the_database(tmp_path):
    db = tmp_path / "r.db"
    store = Store(db)
    run_id = write_synthetic_run(store, 60, seed=3)
    store.close()
    before = db.read_bytes()
    out, junit, js = tmp_path / "rep", tmp_path / "j.xml", tmp_path / "f.json"
    result = CliRunner().invoke(
        main,
        [
            "report",
            str(run_id),
            "--db",
            str(db),
            "--out",
            str(out),
            "--junit",
            str(junit),
            "--json-file",
            str(js),
        ],
    )
    assert result.exit_code == 0, result.output
    assert db.read_bytes() == before
    findings = json.loads(js.read_text())["runs"][0]["findings"]
    metrics = {f["metric"] for f in findings}
    assert {"rss_bytes", "fds", "threads"} <= metrics
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "rss_bytes.png" in pngs
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    page = (out / "index.md").read_text()
    assert "(rss_bytes.png)" in page and f"# soak run {run_id}" in page
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = {c.get("name") for c in suite.findall("testcase")}
    assert metrics <= cases
    assert int(suite.get("tests")) == len(suite.findall("testcase"))
    leaks = [f["metric"] for f in findings if f["verdict"] == "leak"]
    assert int(suite.get("failures")) == len(leaks)


def test_report_without_outputs_is_a_usage_error(tmp_path):
    db = tmp_path / "r.db"
    store = Store(db)
    run_id = write_synthetic_run(store, 20)
    store.close()
    result = CliRunner().invoke(main, ["report", str(run_id), "--db", str(db)])
    assert result.exit_code == 2
    assert "--out" in result.output


def test_output_paths_are_checked_before_anything_is_written(tmp_path):
    from soak.errors import OutputError
    from soak.report.outputs import check_output_paths

    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    check_output_paths(str(tmp_path / "j.xml"), str(tmp_path / "f"), str(tmp_path / "new/deep"))
    refused = {
        ("--junit", "nodir/j.xml"): "folder",
        ("--json-file", "d"): "is a folder, not a file",
        ("--json-file", "f/x.json"): "does not exist",
        ("--out", "f"): "is a file, not a folder",
        ("--out", "f/plots"): "is a file, not a folder",
    }
    for (flag, rel), why in refused.items():
        kwargs = {"--junit": "junit", "--json-file": "json_path", "--out": "out"}
        with pytest.raises(OutputError) as caught:
            check_output_paths(**{kwargs[flag]: str(tmp_path / rel)})
        assert f"{flag} {tmp_path / rel}" in str(caught.value) and why in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"]  # nothing made


def test_report_checks_out_before_importing_matplotlib(tmp_path):
    """An unwritable HOME makes matplotlib warn on import: the bad --out must be refused
    first, in one line, and the check itself must not load matplotlib."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o500)
    (tmp_path / "file").write_text("x")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)
    code = (
        "import sys\n"
        "from soak.report.outputs import check_output_paths\n"
        "print('matplotlib' in sys.modules)\n"
    )
    probe = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert probe.stdout.strip() == "False", probe.stdout + probe.stderr
    argv = ["report", "1", "--db", str(tmp_path / "r.db"), "--out", str(tmp_path / "file")]
    proc = subprocess.run(
        [sys.executable, "-m", "soak.cli", *argv], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("soak: error: "), proc.stderr
    assert "--out" in lines[0] and "atplotlib" not in proc.stderr
