"""Fixtures of the shell's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import orjson
import pytest

from debtor_segments.agents.records import Handled, apply_state, handle_record
from debtor_segments.streams.engine import EngineConfig
from debtor_segments.streams.model import SegmentModel

HandleLines = Callable[[Iterable[bytes]], Iterator[tuple[bytes, Handled]]]


@pytest.fixture
def handle_lines() -> HandleLines:
    """Feed raw lines through :func:`agents.records.handle_record` as the worker's agent does
    (one partition, states applied, the model learning), yielding each line with its result."""

    def run(lines: Iterable[bytes]) -> Iterator[tuple[bytes, Handled]]:
        table: dict[bytes, bytes] = {}
        model, config = SegmentModel(), EngineConfig()
        for offset, line in enumerate(lines):
            try:
                key = orjson.loads(line)["debtor_id"].encode()
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                key = None
            handled = handle_record(table, key=key, value=line, topic="t", partition=0, offset=offset, model=model, config=config, max_amount_cents=10**9, emitted_at="x")
            apply_state(table, handled)
            if handled.learn is not None:
                model.learn_one(handled.learn)
            yield line, handled

    return run
