"""Argument parsing that reports a bad argument in one line, never a usage dump or traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

TYPE_CHECKING = False  # typing costs a few ms at start, and annotations are strings here
if TYPE_CHECKING:
    from typing import NoReturn

EXIT_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_ERROR)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse imports shutil, and bz2 and lzma with it, for the terminal width alone, at
        # every add_argument: 5 ms of `servicetags diff`'s start-up. The same width, read here.
        formatter_class: Callable[..., argparse.HelpFormatter] = self.formatter_class
        return formatter_class(prog=self.prog, width=terminal_width() - 2)


def terminal_width() -> int:
    """What `shutil.get_terminal_size().columns` says: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def fail(prog: str, message: str) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return EXIT_ERROR
