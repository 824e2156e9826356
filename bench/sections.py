"""The benchmark's sections, in the order `python -m bench` runs them.

A section is a name, a title and `run(options) -> SectionResult`. To add one (the control-plane
and CNI benchmarks will), write a module with a `run` like `bench.hbone_section.run` and register
it in `SECTIONS`; `--sections` selects among them. `--cases` is handed to each selected section,
and a section refuses case names it does not know; with several sections, select one with
`--sections` when naming cases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from bench import cni_section, controlplane_section, hbone_section, waypoint_section
from bench.report import SectionResult


@dataclasses.dataclass(frozen=True)
class Options:
    quick: bool
    cases: list[str] | None
    duration: float | None
    runs: int | None
    concurrency: int


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    title: str
    run: Callable[[Options], SectionResult]


def _run_hbone(opts: Options) -> SectionResult:
    base = hbone_section.Settings(duration=2.0, runs=1, ping_count=1000) if opts.quick \
        else hbone_section.Settings()
    settings = dataclasses.replace(
        base,
        duration=opts.duration if opts.duration is not None else base.duration,
        runs=opts.runs if opts.runs is not None else base.runs,
        concurrency=opts.concurrency,
    )
    cases = opts.cases or list(hbone_section.CASES)
    return hbone_section.run(cases, settings)


def _run_controlplane(opts: Options) -> SectionResult:
    # --runs/--duration are the HBONE section's; quick means 5 edits of each kind, not 20.
    settings = controlplane_section.Settings(changes=5 if opts.quick else 20)
    return controlplane_section.run(opts.cases or list(controlplane_section.RUNNABLE), settings)


def _run_cni(opts: Options) -> SectionResult:
    settings = cni_section.Settings(rounds=5 if opts.quick else 20)
    return cni_section.run(opts.cases or list(cni_section.RUNNABLE), settings)


SECTIONS: dict[str, Section] = {
    "hbone": Section("hbone", "HBONE data plane: direct TCP, Envoy pair, our pair", _run_hbone),
    "controlplane": Section("controlplane", "istiod-lite: 1000 pods, 10 xDS clients",
                            _run_controlplane),
    "cni": Section("cni", "ambient-cni ADD/DEL wall time against the node agent", _run_cni),
    "waypoint": Section("waypoint", "L7 through the waypoint vs ztunnel only vs Envoy", lambda o: waypoint_section.run(o.cases or list(waypoint_section.CASES), waypoint_section.Settings(duration=o.duration or (2.0 if o.quick else 5.0)))),  # noqa: E501
}
