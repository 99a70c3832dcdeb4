"""Opening the CLI's input files, with one-line errors."""

from __future__ import annotations

import sys
from typing import IO

import click

__all__ = ["open_input"]


def open_input(path: str) -> IO[bytes]:
    """``path`` opened for binary reading, or stdin for ``-``; a ClickException if unreadable."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as error:
        raise click.ClickException(f"cannot read {path}: {error.strerror}") from None
