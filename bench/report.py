"""Results of a benchmark section, printed as one table and written as JSON.

Who calls it: each section builds a `SectionResult` (metrics, per-case summary figures, raw
runs, and the reason for every case that could not run); `bench.__main__` prints
`format_table(result)` and writes `to_json(result)` under `bench-results/`.

Every figure appears as an absolute value and as a ratio to each reference case of the section
(for the HBONE section: direct TCP and the Envoy pair). A case that could not run shows
"not available*" instead of numbers, with the reason in a footnote; a case that started but broke
(a tool timed out through it) shows "failed*" and no numbers at all, since a partial set of
runs would not be comparable; a figure a case does not have (CPU of a proxy on the direct path)
shows "-".
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
from typing import Any


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False


@dataclasses.dataclass
class SectionResult:
    name: str
    title: str
    metrics: list[Metric]
    cases: dict[str, str]  # name -> label, in display order
    references: list[str]
    settings: dict[str, Any]
    summary: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    raw: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # ran, then broke


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def rows(result: SectionResult) -> list[list[str]]:
    refs = [r for r in result.references if r in result.cases]
    out = []
    for metric in result.metrics:
        first = True
        for case, label in result.cases.items():
            cells = [f"{metric.label} ({metric.unit})" if first else "", label]
            first = False
            if case in result.unavailable or case in result.failed:
                cells.append("not available*" if case in result.unavailable else "failed*")
                out.append(cells)
                continue
            value = result.summary.get(case, {}).get(metric.key)
            cells.append("-" if value is None else _fmt(value))
            for ref in refs:
                ref_value = result.summary.get(ref, {}).get(metric.key)
                if value is None or not ref_value:
                    cells.append("-")
                else:
                    cells.append(f"{value / ref_value:.2f}x")
            out.append(cells)
    return out


def format_table(result: SectionResult) -> str:
    refs = [r for r in result.references if r in result.cases]
    header = ["metric", "case", "value", *[f"vs {r}" for r in refs]]
    body = rows(result)
    widths = [len(h) for h in header]
    for row in body:
        for i, cell in enumerate(row[: len(header)]):
            widths[i] = max(widths[i], len(cell))
    lines = [f"== {result.title} ==",
             "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    for case, reason in result.unavailable.items():
        lines.append(f"* {result.cases.get(case, case)}: not available: {reason}")
    for case, reason in result.failed.items():
        first_line = reason.strip().splitlines()[0] if reason.strip() else "no message"
        lines.append(f"* {result.cases.get(case, case)}: failed: {first_line} (details: JSON)")
    settings = ", ".join(f"{k}={v}" for k, v in result.settings.items())
    lines.append(f"({settings}; ratios are case/reference; throughput: higher is better, "
                 "others: lower is better)")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """Facts that qualify the numbers: cores, kernel, load, Envoy and Python versions."""
    from tests.support.envoy import envoy_binary

    try:
        envoy = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True,
                               timeout=30).stdout.strip()
    except Exception as exc:
        envoy = f"unavailable: {exc}"
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "envoy": envoy,
    }


def to_json(result: SectionResult, env: dict[str, Any]) -> dict[str, Any]:
    return {
        "section": result.name,
        "title": result.title,
        "environment": env,
        "settings": result.settings,
        "cases": result.cases,
        "metrics": [dataclasses.asdict(m) for m in result.metrics],
        "summary": result.summary,
        "unavailable": result.unavailable,
        "failed": result.failed,
        "runs": result.raw,
        "table": rows(result),
    }
