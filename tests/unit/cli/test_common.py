"""Option types every command shares: no `nan`, no overflowing time limit, no undecodable text.

Field attack #9 (`--timeout inf/nan/1e10` tracebacks or hangs) and #10 (invalid UTF-8 in an
option value ends in a UnicodeEncodeError traceback).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from nerschat.cli.common import NO_LIMIT, TEXT, FiniteFloat, SafeText
from nerschat.cli.main import COMMANDS, cli
from nerschat.registry import Registry
from tests.conftest import make_endpoint

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]


def run_cli(*args: str | bytes, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NERSCHAT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NERSCHAT_REGISTRY": "/nonexistent/registry"})


@pytest.mark.parametrize("text", ["nan", "NaN", "-nan"])
def test_nan_is_refused(text: str) -> None:
    for kind in (FiniteFloat(), FiniteFloat(0.0, no_limit=True)):
        with pytest.raises(click.BadParameter, match="nan is not a number"):
            kind.convert(text, None, None)


def test_inf_and_huge_values_are_no_limit_for_time_limits_only() -> None:
    limit = FiniteFloat(0.0, no_limit=True)
    assert limit.convert("inf", None, None) == NO_LIMIT
    assert limit.convert("1e10", None, None) == NO_LIMIT
    assert limit.convert("1e400", None, None) == NO_LIMIT
    assert limit.convert("2.5", None, None) == 2.5
    with pytest.raises(click.BadParameter, match="-inf is not a finite number"):
        limit.convert("-inf", None, None)
    plain = FiniteFloat(0.5, 100.0)
    for text, message in (("inf", "inf is not a finite number"), ("0.1", "less than 0.5"),
                          ("1e10", "more than 100"), ("x", "'x' is not a number")):
        with pytest.raises(click.BadParameter, match=message):
            plain.convert(text, None, None)


def test_text_with_undecodable_bytes_is_refused() -> None:
    assert TEXT.convert("déjà vu", None, None) == "déjà vu"
    with pytest.raises(click.BadParameter, match=r"not valid UTF-8 \(byte 0xff\)"):
        SafeText().convert("a\udcffb", None, None)


def test_every_command_option_is_safe() -> None:
    """Whichever module defines an option, no command takes plain str or float values."""
    ctx = click.Context(cli)
    seen = 0
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None, name
        commands = [command, *getattr(command, "commands", {}).values()]
        for each in commands:
            for param in each.params:
                kind = param.type
                assert not isinstance(kind, click.types.FloatParamType), (name, param.name)
                assert type(kind) is not click.types.StringParamType, (name, param.name)
                seen += isinstance(kind, (FiniteFloat, SafeText))
    assert seen > 20


@pytest.mark.parametrize(("args", "option"), [
    (["wait", "--model", "m", "--timeout", "nan"], "'--timeout': nan is not a number"),
    (["stop", "--all", "--timeout", "nan"], "'--timeout': nan is not a number"),
    (["serve", "--engine", "stub", "--model", "m", "--ttl", "inf"], "'--ttl': inf is not a "
                                                                    "finite number"),
    (["serve", "--engine", "stub", "--model", "m", "--grace-period", "nan"],
     "'--grace-period': nan"),
    (["launch", "--engine", "stub", "--model", "m", "--drain-before", "inf"],
     "'--drain-before': inf is not a finite number"),
    (["chat", "--temperature", "nan"], "'--temperature': nan is not a number"),
    (["logs", "x", "--poll", "nan"], "'--poll': nan is not a number"),
    (["router", "--wait-timeout", "nan"], "'--wait-timeout': nan is not a number"),
    (["pool", "start", "--engine", "stub", "--model", "m", "--period", "inf"],
     "'--period': inf is not a finite number"),
    (["ls", "--model", b"\xff"], "'--model': '\\udcff' is not valid UTF-8 (byte 0xff)"),
    (["serve", "--engine", "stub", "--model", b"m\xfe"], "'--model': 'm\\udcfe' is not valid "
                                                         "UTF-8"),
    (["launch", "--engine", "stub", "--model", "m", "--account", b"a\xff"],
     "'--account': 'a\\udcff' is not valid UTF-8"),
    # Options other modules define (judge, embed) get the same types through the group.
    (["judge", "IN", "-o", "OUT", "--system-prompt", b"\xff"], "'--system-prompt': '\\udcff'"),
    (["judge", "IN", "-o", "OUT", "--mode", "classify", "--labels", b"a\xff,b"],
     "'--labels': 'a\\udcff,b' is not valid UTF-8"),
    (["judge", "IN", "-o", "OUT", "--model", "m", "--timeout", "nan"], "'--timeout': nan"),
    (["judge", "IN", "-o", "OUT", "--temperature", "inf"], "'--temperature': inf is not a "
                                                           "finite number"),
    (["run-batch", "-i", "IN", "-o", "OUT", "--timeout", "nan"], "'--timeout': nan"),
    (["embed", "IN", "-o", "OUT", "--model", "e", "--prefix", b"\xff"],
     "'--prefix': '\\udcff' is not valid UTF-8"),
])
def test_bad_values_are_one_line_usage_errors(args: list[str | bytes], option: str,
                                              tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "1", "question": "q", "answers": ["a", "b"]}\n')
    places = {"IN": str(source), "OUT": str(tmp_path / "out.jsonl")}
    result = run_cli(*(places.get(a, a) if isinstance(a, str) else a for a in args))
    assert result.returncode == 2, result.stderr
    assert option in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("timeout", ["inf", "1e10"])
def test_wait_with_no_time_limit_answers(registry: Registry, timeout: str) -> None:
    registry.publish(make_endpoint(id="r1"))
    result = run_cli("wait", "--model", "m1", "--timeout", timeout, "-q",
                     "--registry", str(registry.path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("args", [[], ["pool"]])
def test_a_group_alone_still_prints_its_help(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.stderr.startswith("Usage: nerschat") or result.stdout.startswith(
        "Usage: nerschat"), result.stderr
    assert "Commands:" in result.stdout + result.stderr
