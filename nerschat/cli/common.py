"""Options and helpers shared by every CLI command."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.text import Text

from nerschat.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

# One console for pretty output (stderr), stdout kept for what scripts read (URLs, JSON).
console = Console(stderr=True)


def registry_option(func: F) -> F:
    """`--registry DIR` (default: $NERSCHAT_REGISTRY, else ~/.nerschat/registry)."""
    return click.option(
        "--registry", "registry_path", type=click.Path(file_okay=False), default=None,
        help="Registry directory [default: $NERSCHAT_REGISTRY or ~/.nerschat/registry].",
    )(func)


def shared_option(func: F) -> F:
    """`--shared`: for commands that write to the registry (serve, stop)."""
    return click.option(
        "--shared", is_flag=True, default=False,
        help="Files this command writes are group-readable (0640), and a registry directory "
             "it creates is setgid 2750; an existing directory's mode is never changed.",
    )(func)


NO_LIMIT = 1e9
"""Seconds (about 31 years) a time limit given as `inf` (or anything larger) stands for: long
enough to never end, small enough for every timer and `Event.wait`."""


class FiniteFloat(click.ParamType):
    """A float option: `nan` always refused; `inf` refused, or `no_limit` for time limits.

    `minimum`/`maximum` bound the value (inclusive); with `no_limit`, `inf` and any value of
    `NO_LIMIT` or more become `NO_LIMIT`. Errors are click usage errors (exit 2, one line
    naming the option).
    """

    name = "float"

    def __init__(self, minimum: float | None = None, maximum: float | None = None, *,
                 no_limit: bool = False):
        self.minimum, self.maximum, self.no_limit = minimum, maximum, no_limit

    def __repr__(self) -> str:
        return (f"FiniteFloat({self.minimum}, {self.maximum}"
                + (", no_limit=True)" if self.no_limit else ")"))

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        """The value as a float within the bounds (see the class docstring)."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            text = TEXT.convert(value, param, ctx).strip()
            try:
                number = float(text)
            except ValueError:
                self.fail(f"{text!r} is not a number", param, ctx)
        if math.isnan(number):
            self.fail("nan is not a number", param, ctx)
        if self.no_limit and number >= NO_LIMIT:
            return NO_LIMIT
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        if self.minimum is not None and number < self.minimum:
            self.fail(f"{number:g} is less than {self.minimum:g}", param, ctx)
        if self.maximum is not None and number > self.maximum:
            self.fail(f"{number:g} is more than {self.maximum:g}", param, ctx)
        return number


class SafeText(click.ParamType):
    r"""A text option: refuses text that is not valid UTF-8 on the command line.

    Python turns undecodable bytes of argv into lone surrogates (`\udcff`); such a value
    cannot be written to a file, a request or a terminal, so it is a usage error (exit 2, one
    line naming the option) instead of an encoding traceback later.
    """

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        """`value` as a str with no lone surrogates."""
        text = value if isinstance(value, str) else str(value)
        bad = next((ch for ch in text if "\ud800" <= ch <= "\udfff"), None)
        if bad is not None:
            byte = f" (byte 0x{ord(bad) - 0xDC00:02x})" if ord(bad) >= 0xDC80 else ""
            self.fail(f"{one_line(repr(text))[:80]} is not valid UTF-8{byte}", param, ctx)
        return text


TEXT = SafeText()


class WalltimeParam(click.ParamType):
    """A SLURM time limit (`nerschat.slurm.parse_walltime`), given back as `HH:MM:SS`."""

    name = "walltime"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        """`value` normalised to `HH:MM:SS`; a one-line usage error naming the forms if bad."""
        from nerschat.slurm import parse_walltime

        try:
            return parse_walltime(TEXT.convert(value, param, ctx)).hms
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


WALLTIME = WalltimeParam()


def seconds_option(flag: str, default: float, help: str, minimum: float = 0.0,
                   *, no_limit: bool = True, maximum: float | None = None) -> Callable[[F], F]:
    """A `--FLAG SECONDS` option: a finite float of at least `minimum`, `default` if not given.

    `no_limit`: `inf` (or any huge value) means no limit (`NO_LIMIT`); otherwise it is
    refused, as is a value above `maximum`.
    """
    return click.option(flag, type=FiniteFloat(minimum, maximum, no_limit=no_limit),
                        default=default, help=help)


def harden_params(command: click.Command) -> click.Command:
    """Give every plain text and float parameter of `command` (and its subcommands) the safe types.

    Plain `str` becomes `SafeText`, `float`/`FloatRange` becomes `FiniteFloat` (a parameter
    whose name ends in `timeout` takes `inf` as no limit): whichever module defines an option,
    no value from the command line can be `nan` or not valid UTF-8. Returns `command`.
    """
    for param in command.params:
        kind = param.type
        if isinstance(kind, click.types.StringParamType):
            param.type = TEXT
        elif isinstance(kind, click.FloatRange):
            param.type = FiniteFloat(
                None if kind.min is None else float(kind.min),
                None if kind.max is None else float(kind.max),
                no_limit=(param.name or "").endswith("timeout"))
        elif isinstance(kind, click.types.FloatParamType):
            param.type = FiniteFloat(no_limit=(param.name or "").endswith("timeout"))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            harden_params(sub)
    return command


def api_key_env_option(default: str) -> Callable[[F], F]:
    """`--api-key-env VAR`: read the inbound API key from VAR; `default` says what happens without.

    The key itself never goes on the command line (see `nerschat.envkey`).
    """
    return click.option("--api-key-env", default=None, metavar="VAR",
                        help=f"Read the API key from this environment variable [default: {default}].")


def open_registry(registry_path: str | None, shared: bool = False) -> Registry:
    """The command's registry (see `Registry.of`)."""
    return Registry.of(registry_path, shared=shared)


def print_error(message: str) -> None:
    """Print `error: MESSAGE` on stderr as one line; markup and escapes in it are shown as text."""
    console.print(Text.assemble(("error:", "red"), " ", one_line(message)), highlight=False,
                  soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Exit with a one-line error (status 1: a failure, 2: a usage error)."""
    print_error(message)
    raise SystemExit(code)


def one_line(text: str) -> str:
    r"""`text` on one printable line, safe for a terminal.

    Newlines are folded; control characters (ANSI escapes) are shown as `\xNN`, so nothing
    read from a file can drive the terminal.
    """
    text = " ".join(text.split("\n")).strip()
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def format_age(seconds: float | None) -> str:
    """Seconds as `42s`, `7m` or `2.5h` (`-` for None)."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def printable(text: str) -> str:
    r"""`text` with its line breaks and tabs kept, every other control character shown as `\xNN`.

    For multi-line text from a server or a file (a streamed reply); print it with
    `markup=False` or as a `Text`. `one_line` is the one-line form.
    """
    return "".join(ch if ch.isprintable() or ch in "\n\t" else repr(ch)[1:-1] for ch in text)
