"""JUnit XML for nightly CI: one test case per metric, failures carrying the numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from soak.analysis.verdict import Finding
from soak.report.analyze import human


def junit_xml(runs: list[tuple[int, str, str, list[Finding]]]) -> str:
    """`runs`: (run id, label, status, findings). A run that failed outright is a failing case."""
    suites = ET.Element("testsuites", name="soak")
    for run_id, label, status, findings in runs:
        suite = ET.SubElement(suites, "testsuite", name=f"soak.run{run_id}.{label}")
        failures = skipped = 0
        if status in ("failed", "crashed", "hung", "interrupted"):
            case = ET.SubElement(suite, "testcase", classname=f"soak.run{run_id}", name="run")
            ET.SubElement(case, "failure", message=f"run {status}").text = f"run {run_id} {status}"
            failures += 1
        for f in findings:
            case = ET.SubElement(suite, "testcase", classname=f"soak.run{run_id}", name=f.metric)
            detail = (
                f"slope {human(f.slope, f.metric)}/iteration "
                f"[{human(f.slope_low, f.metric)}, {human(f.slope_high, f.metric)}], "
                f"growth {human(f.total_growth, f.metric)}, threshold "
                f"{human(f.threshold, f.metric)}/iteration, "
                f"budget {human(f.growth_budget, f.metric)}, "
                f"p={f.p_value:.3g}"
            )
            if f.verdict == "leak":
                ET.SubElement(
                    case, "failure", message=f"{f.metric} leaks: {detail}"
                ).text = f.reason
                failures += 1
            elif f.verdict in ("inconclusive", "no_data"):
                ET.SubElement(case, "skipped", message=f"{f.verdict}: {f.reason}")
                skipped += 1
            else:
                ET.SubElement(case, "system-out").text = detail
        suite.set("tests", str(len(suite)))
        suite.set("failures", str(failures))
        suite.set("skipped", str(skipped))
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def write_junit(path: str | Path, runs: list[tuple[int, str, str, list[Finding]]]) -> None:
    Path(path).write_text(junit_xml(runs))
