"""Argument parsing that reports a bad argument in one line, never a usage dump or traceback."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def fail(prog: str, message: str) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return EXIT_ERROR
