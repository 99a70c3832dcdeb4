"""``GET /personas`` and ``GET /personas/transitions``: the population of all workers, summed
from the newest summary of every partition (:class:`agents.population.PopulationBoard`).

* ``GET /personas``: debtors by persona, by quadrant and by both (roles ``agent``, ``ops``);
* ``GET /personas/transitions?days=30|90|365``: persona ``days`` ago -> persona now, counts and
  row shares (roles ``agent``, ``ops``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from debtor_segments.agents.auth import AGGREGATES
from debtor_segments.agents.http_common import Replies
from debtor_segments.agents.population import PopulationBoard
from debtor_segments.streams.population import UnknownWindow, merge_population, merge_transitions, window_days

__all__ = ["BadRequest", "PopulationPages", "parse_days"]


class BadRequest(ValueError):
    """A query parameter is invalid; the message says what is allowed."""


def parse_days(query: Mapping[str, str]) -> int:
    """The ``days`` query parameter (:func:`streams.population.window_days`).

    >>> parse_days({}), parse_days({"days": "90"})
    (365, 90)
    >>> parse_days({"days": "60"})
    Traceback (most recent call last):
    ...
    debtor_segments.agents.http_population.BadRequest: days must be one of 30, 90, 365 (default 365)
    """
    try:
        return window_days(query.get("days"))
    except UnknownWindow as error:
        raise BadRequest(str(error)) from None


class PopulationPages:
    """The aggregate pages' logic; :func:`agents.api.register_api` wires it into the app."""

    def __init__(self, replies: Replies, board: PopulationBoard, partitions: int) -> None:
        self.replies = replies
        self.board = board
        self.partitions = partitions

    async def personas(self, view: Any, request: Any) -> Any:
        _, denied = self.replies.check(view, request, AGGREGATES)
        if denied is not None:
            return denied
        if not self.board.loaded.is_set():
            return self.replies.unavailable(view, "population summaries not loaded yet")
        return view.json(merge_population(self.board.summaries, self.partitions))

    async def transitions(self, view: Any, request: Any) -> Any:
        _, denied = self.replies.check(view, request, AGGREGATES)
        if denied is not None:
            return denied
        try:
            days = parse_days(request.query)
        except BadRequest as error:
            return self.replies.error(view, 400, "bad_request", str(error))
        if not self.board.loaded.is_set():
            return self.replies.unavailable(view, "population summaries not loaded yet")
        return view.json(merge_transitions(self.board.summaries, self.partitions, days))
