"""Opening the CLI's input files, with one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click
import orjson

from debtor_segments.streams.model import SegmentModel

__all__ = ["bounded_lines", "load_model_file", "open_input"]

_CHUNK = 1 << 20


def bounded_lines(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    """The lines of ``stream``, reading at most ``limit + 1`` bytes of any one line: the rest of
    an overlong line is skipped unread into memory, and its first ``limit + 1`` bytes are
    yielded, which the decoder rejects as too large (a 200 MB line once took 810 MB).

    >>> import io
    >>> list(bounded_lines(io.BytesIO(b"ab\\n" + b"x" * 10 + b"\\ncd"), 4))
    [b'ab\\n', b'xxxxx', b'cd']
    """
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            rest = line
            while rest and not rest.endswith(b"\n"):
                rest = stream.readline(_CHUNK)
        yield line


def open_input(path: str) -> IO[bytes]:
    """``path`` opened for binary reading, or stdin for ``-``; a ClickException if unreadable."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as error:
        raise click.ClickException(f"cannot read {path}: {error.strerror}") from None


def load_model_file(path: Path | None, *, must_exist: bool = False) -> SegmentModel:
    """The model in a snapshot file (the prototypes when there is none yet, unless it must
    exist); a file that cannot be read is refused with the reason."""
    if path is None or not (must_exist or path.exists()):
        return SegmentModel()
    try:
        return SegmentModel.restore(orjson.loads(path.read_bytes()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise click.ClickException(f"cannot restore model snapshot {path}: {error}") from None
