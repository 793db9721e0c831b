"""Gate reports: progress lines while a scenario runs, a summary table, JUnit XML, node logs.

Everything lands under ``<out>/gates/<scenario>/``: ``junit.xml`` (one test case per stage,
exercised and skipped checks listed in its output), ``checks/<stage>.xml`` (testinfra's own
JUnit), and ``logs/<node>.log`` for the nodes involved in a failing stage.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from promenade.fileio import atomic_write, ensure_dir


@dataclass
class StageResult:
    """What happened in one stage."""

    name: str
    seconds: float = 0.0
    ok: bool = True
    message: str = ""
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class Report:
    """Collects stage results and writes them under ``<out>/gates/<scenario>``."""

    def __init__(self, scenario: str, out_dir: str, provider: str, progress=print):
        self.scenario = scenario
        self.provider = provider
        self.dir = os.path.abspath(os.path.join(out_dir, "gates", scenario))
        self.progress = progress
        self.stages: list[StageResult] = []
        self.started = time.monotonic()
        ensure_dir(self.dir)

    @property
    def ok(self) -> bool:
        return all(stage.ok for stage in self.stages)

    def stage_started(self, index: int, total: int, name: str) -> None:
        self.progress(f"[{self.scenario} {index}/{total}] {name} ...")

    def add(self, result: StageResult) -> None:
        self.stages.append(result)
        status = "ok" if result.ok else "FAILED"
        counts = ""
        if result.passed or result.skipped:
            counts = f" ({len(result.passed)} checks, {len(result.skipped)} skipped)"
        self.progress(f"    {status} in {result.seconds:.1f} s{counts}")
        if not result.ok:
            self.progress("    " + result.message.replace("\n", "\n    "))

    def save_log(self, node: str, text: bytes) -> str:
        path = os.path.join(self.dir, "logs", f"{node}.log")
        atomic_write(path, text, mode=0o600)
        return path

    def summary(self) -> str:
        """The table printed at the end of a run."""
        width = max([len(s.name) for s in self.stages] + [5])
        lines = [f"{'stage':<{width}}  result  seconds  checks  skipped"]
        for stage in self.stages:
            lines.append(f"{stage.name:<{width}}  {'ok' if stage.ok else 'FAIL':<6}  {stage.seconds:7.1f}  "
                         f"{len(stage.passed):6}  {len(stage.skipped):7}")
        total = time.monotonic() - self.started
        verdict = "passed" if self.ok else "FAILED"
        lines.append(f"gate {self.scenario} ({self.provider}) {verdict} in {total:.1f} s")
        return "\n".join(lines)

    def write_junit(self) -> str:
        """Write ``junit.xml`` (one test case per stage) and return its path."""
        failures = sum(not s.ok for s in self.stages)
        suite = ET.Element("testsuite", name=f"gate.{self.scenario}", tests=str(len(self.stages)),
                           failures=str(failures), time=f"{sum(s.seconds for s in self.stages):.3f}")
        for stage in self.stages:
            case = ET.SubElement(suite, "testcase", classname=f"gate.{self.scenario}", name=stage.name,
                                 time=f"{stage.seconds:.3f}")
            if not stage.ok:
                summary = stage.message.splitlines()[0] if stage.message else "failed"
                ET.SubElement(case, "failure", message=summary).text = stage.message
            lines = [f"exercised: {name}" for name in stage.passed]
            lines += [f"skipped: {name}: {reason}" for name, reason in sorted(stage.skipped.items())]
            if lines:
                ET.SubElement(case, "system-out").text = "\n".join(lines)
        path = os.path.join(self.dir, "junit.xml")
        ET.indent(suite)
        atomic_write(path, ET.tostring(suite, encoding="unicode") + "\n")
        return path
