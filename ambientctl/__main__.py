"""`ambientctl`: the ambient-py user CLI: `sandbox ...` and the debugging commands.

`ambientctl sandbox up|status|apply|exec|logs|down|demo` is a thin argparse layer over
`ambientctl.sandbox.Sandbox`; every failure is a `SandboxError` printed as one message (naming
the component or pod and where to look) with exit status 1; usage errors exit 2.
`ztunnel-config`, `why` and `analyze` come from `ambientctl.debug.register` (their own module).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

SANDBOX_HELP = """\
Build and run the whole mesh on this machine, without Docker or Kubernetes: each node and each
pod is a Linux network namespace; istiod-lite, one ztunnel and one CNI node agent per node, and
sample apps in the pods are real processes. Needs root.

  ambientctl sandbox up                    # 2 nodes, the bundled example manifests
  ambientctl sandbox status
  ambientctl sandbox exec shop/sleep -- curl -s http://10.10.2.2:8080/
  ambientctl sandbox logs ztunnel-node1
  ambientctl sandbox down
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ambientctl", description="ambient-py command line tool")
    top = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sb = top.add_parser("sandbox", help="the local multi-node sandbox in network namespaces",
                        description=SANDBOX_HELP,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sb.add_argument("--name", default=os.environ.get("AMBIENT_SANDBOX", "sb"),
                    help="sandbox name, 1-12 lowercase letters/digits; namespaces are "
                         "amb-NAME-* (default: $AMBIENT_SANDBOX or %(default)s)")
    sub = sb.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="create namespaces, start every component and pod, wait "
                                   "until ready")
    up.add_argument("--nodes", type=int, default=2, help="number of nodes (default %(default)s)")
    up.add_argument("-f", "--manifests", type=Path, metavar="DIR",
                    help="manifest folder to use in place (default: a copy of "
                         "examples/sandbox in the state dir)")
    up.add_argument("--timeout", type=float, default=60.0,
                    help="seconds for everything to become ready (default %(default)s)")
    st = sub.add_parser("status", help="nodes, pods, enrollment and component health")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    ap = sub.add_parser("apply", help="drop a manifest into the folder; new Pods are started")
    ap.add_argument("-f", "--filename", type=Path, required=True, metavar="FILE")
    ex = sub.add_parser("exec", help="run a command inside a pod's network namespace",
                        usage="ambientctl sandbox exec POD -- CMD [ARG...]")
    ex.add_argument("pod", metavar="POD", help="NAMESPACE/NAME, or NAME if unique")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    lg = sub.add_parser("logs", help="print a component's log (istiod, ztunnel-node1, "
                                     "cni-agent-node1, app-NS-POD)")
    lg.add_argument("component", nargs="?", help="omit to list the components")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines")
    sub.add_parser("down", help="remove every namespace, process and file of the sandbox "
                                "(safe to repeat)")
    demo = sub.add_parser("demo", help="on a fresh sandbox, prove what the mesh does (mTLS on "
                                       "the wire, identity, policy, STRICT) as a checklist; "
                                       "exit 1 if a proof fails")
    demo.add_argument("--keep", action="store_true",
                      help="leave the sandbox up afterwards (default: `down` at the end)")
    from ambientctl import debug  # ztunnel-config, why, analyze (docs/debugging.md)
    from ambientctl.sandbox.resolver import SandboxResolver

    debug.register(top, resolver=SandboxResolver())
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "sandbox":
        return int(args.func(args))
    if args.action == "exec":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("exec needs a command: ambientctl sandbox exec POD -- CMD [ARG...]")
        args.cmd = cmd
    if args.action == "up" and args.nodes < 1:
        parser.error("--nodes must be at least 1")
    from ambientctl.sandbox.errors import SandboxError

    try:
        return _run(args)
    except SandboxError as exc:
        print(f"ambientctl sandbox {args.action}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ambientctl sandbox status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _run(args: argparse.Namespace) -> int:
    from ambientctl.sandbox.core import Sandbox
    from ambientctl.sandbox.report import format_status

    sb = Sandbox(args.name)
    if args.action == "up":
        try:
            sb.up(nodes=args.nodes, manifests=args.manifests, timeout=args.timeout,
                  progress=_say)
        except Exception:
            if sb.state.exists():
                print("the sandbox is left as it is for inspection; "
                      f"`ambientctl sandbox --name {sb.name} down` removes it", file=sys.stderr)
            raise
        return 0
    if args.action == "demo":
        from ambientctl.sandbox.demo import run

        return run(sb, _say, keep=args.keep)
    if args.action == "down":
        if not sb.down(progress=_say):
            _say(f"sandbox {sb.name!r}: nothing to remove")
        return 0
    if args.action == "status":
        st = sb.status()
        _say(json.dumps(st, indent=2) if args.json else format_status(st))
        return 0 if st["healthy"] else 3
    if args.action == "apply":
        sb.apply(args.filename, progress=_say)
        return 0
    if args.action == "exec":
        sb.exec_replace(args.pod, args.cmd)
        return 127  # not reached
    if args.action == "logs":
        if not args.component:
            _say("\n".join(sb.components()))
            return 0
        return _logs(sb.log_path(args.component), args.follow, args.tail)
    raise AssertionError(args.action)


def _logs(path: Path, follow: bool, tail: int) -> int:
    try:
        f = open(path, "rb")  # noqa: SIM115 - kept open while following
    except FileNotFoundError:
        print(f"no log yet at {path}", file=sys.stderr)
        return 1
    with f:
        data = f.read()
        lines = data.splitlines(keepends=True)
        sys.stdout.buffer.write(b"".join(lines[-tail:] if tail else lines))
        sys.stdout.flush()
        while follow:
            chunk = f.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
