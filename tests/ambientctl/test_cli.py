"""`ambientctl` argument parsing, help texts and usage errors (no namespaces needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ambientctl.__main__ import build_parser, main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ambientctl", *args], capture_output=True,
                          text=True, timeout=30, check=False)


def test_sandbox_help_lists_every_action():
    """`ambientctl sandbox --help` names up/status/apply/exec/logs/down and needs no root."""
    out = _run("sandbox", "--help")
    assert out.returncode == 0
    for action in ("up", "status", "apply", "exec", "logs", "down"):
        assert action in out.stdout
    assert "network namespace" in out.stdout


@pytest.mark.parametrize(("argv", "message"), [
    pytest.param(["sandbox"], "required", id="no-action"),
    pytest.param(["sandbox", "up", "--nodes", "0"], "--nodes must be at least 1", id="nodes-0"),
    pytest.param(["sandbox", "up", "--nodes", "two"], "invalid int value", id="nodes-text"),
    pytest.param(["sandbox", "exec", "shop/client"], "exec needs a command", id="exec-no-cmd"),
    pytest.param(["sandbox", "apply"], "-f/--filename", id="apply-no-file"),
])
def test_usage_errors_exit_2_with_a_message(argv, message, capsys):
    """Bad arguments exit with status 2 and say what is wrong."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_exec_keeps_the_command_after_double_dash():
    """`exec POD -- CMD ARGS` passes CMD and its own options through untouched."""
    args = build_parser().parse_args(["sandbox", "exec", "p", "--", "curl", "-s", "--x"])
    assert args.cmd == ["curl", "-s", "--x"]


def test_commands_on_a_sandbox_that_is_not_up_fail_clearly(tmp_path):
    """status/logs on a missing sandbox exit 1 and tell the user to run `up`."""
    env_run = subprocess.run(
        [sys.executable, "-m", "ambientctl", "sandbox", "--name", "nosuch", "status"],
        capture_output=True, text=True, timeout=30, check=False,
        env={"AMBIENT_SANDBOX_STATE": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert env_run.returncode == 1
    assert "is not up" in env_run.stderr and "ambientctl sandbox up" in env_run.stderr


def test_bad_sandbox_name_is_an_error_not_a_traceback():
    """An invalid --name is reported in one line."""
    out = _run("sandbox", "--name", "bad-name", "status")
    assert out.returncode == 1
    assert "not valid" in out.stderr and "Traceback" not in out.stderr
