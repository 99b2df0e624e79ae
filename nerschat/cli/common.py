"""Options and helpers shared by every CLI command."""

from __future__ import annotations

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


def seconds_option(flag: str, default: float, help: str,
                   minimum: float = 0.0) -> Callable[[F], F]:
    """A `--FLAG SECONDS` option: a float of at least `minimum`, `default` when not given."""
    return click.option(flag, type=click.FloatRange(min=minimum), default=default, help=help)


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
