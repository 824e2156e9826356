"""`python -m bench [--quick] [--cases direct,envoy,ours] [--duration S] [--runs N] ...`

Runs the selected sections (`bench.sections`), prints one table per section and writes one JSON
file per section to `bench-results/<section>-<UTC time>.json`. Needs root (it creates network
namespaces) and iperf3 on PATH.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import shutil
import sys

from bench.report import environment, format_table, to_json
from bench.sections import SECTIONS, Options


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one repetition, 2 s transfers, 1000 round trips")
    parser.add_argument("--cases", type=_csv, default=None,
                        help="comma-separated cases (hbone: direct,envoy,ours; default all)")
    parser.add_argument("--sections", type=_csv, default=list(SECTIONS),
                        help=f"comma-separated sections (default: {','.join(SECTIONS)})")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per iperf3 run (default 5, quick 2)")
    parser.add_argument("--runs", type=int, default=None,
                        help="repetitions; figures are medians (default 3, quick 1)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="worker threads per Envoy (default 1, like our single process)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench-results"),
                        help="folder for the JSON results")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces and veth pairs")
    if shutil.which("iperf3") is None:
        parser.error("iperf3 is not on PATH (apt-get install iperf3)")
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {list(SECTIONS)}")
    opts = Options(args.quick, args.cases, args.duration, args.runs, args.concurrency)
    env = environment()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in args.sections:
        result = SECTIONS[name].run(opts)
        env_now = {**env, "loadavg_end": os.getloadavg()}
        path = args.out / f"{name}-{stamp}.json"
        path.write_text(json.dumps(to_json(result, env_now), indent=1, ensure_ascii=False))
        print()
        print(format_table(result))
        print(f"(cpus {env['cpus']}, load {env['loadavg'][0]:.2f} at start, "
              f"{env_now['loadavg_end'][0]:.2f} at end; JSON: {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
