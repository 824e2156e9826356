"""`ambientctl` debugging commands: `ztunnel-config`, `why`, `analyze` (docs/debugging.md).

The one hook for `ambientctl/__main__.py`:

    ambientctl.debug.register(subparsers)                      # or, in the sandbox,
    ambientctl.debug.register(subparsers, resolver=sandbox_resolver)

It adds the three subcommands; each sets `func(args) -> int` (the exit code; output on stdout,
errors on stderr), so the main program ends with `return args.func(args)`. `main(argv)` runs
them standalone (`python -m ambientctl.debug ...`) and is what tests call.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ambientctl.debug.admin_client import NoNodeResolver, Resolver
from ambientctl.debug.errors import DebugError

__all__ = ["DebugError", "Resolver", "main", "register"]


def register(subparsers: Any, *, resolver: Resolver | None = None) -> None:
    """Add `ztunnel-config`, `why` and `analyze` to an argparse subparsers object."""
    from ambientctl.debug import commands, ztunnel_config

    resolver = resolver or NoNodeResolver()
    parsers = [ztunnel_config.add_parser(subparsers, resolver),
               commands.add_why_parser(subparsers, resolver),
               commands.add_analyze_parser(subparsers)]
    for p in parsers:
        p.set_defaults(func=_runner(p.get_default("debug_command")))


def _runner(command: Any) -> Any:
    def func(args: argparse.Namespace, out: TextIO | None = None,
             err: TextIO | None = None) -> int:
        out = out or sys.stdout
        err = err or sys.stderr
        try:
            code: int = command(args, out)
        except DebugError as e:
            err.write(f"error: {e}\n")
            return e.exit_code
        return code

    return func


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None, resolver: Resolver | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ambientctl")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub, resolver=resolver)
    args = parser.parse_args(argv)
    result: int = args.func(args, out, err)
    return result
