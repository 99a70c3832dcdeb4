"""Summaries of a population of debtors: distributions and the persona transition matrix.

>>> before = {"a": "tamara", "b": "tamara", "c": "job"}
>>> after = {"a": "tamara", "b": "bryan", "c": "job"}
>>> matrix = transition_matrix(before, after)
>>> matrix["tamara"]["bryan"], matrix["job"]["job"]
(1, 1)
>>> row_shares(matrix)["tamara"]["tamara"]
0.5
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from streams.personas import PERSONAS, UNKNOWN
from streams.quadrants import QUADRANTS

__all__ = ["ALL_PERSONAS", "ALL_QUADRANTS", "distribution", "format_table", "row_shares", "transition_matrix"]

ALL_PERSONAS: tuple[str, ...] = (*PERSONAS, UNKNOWN)
ALL_QUADRANTS: tuple[str, ...] = (*QUADRANTS, UNKNOWN)


def distribution(values: Iterable[str], labels: tuple[str, ...]) -> dict[str, int]:
    """Count of each label (zero for labels not seen)."""
    counts = Counter(values)
    return {label: counts[label] for label in labels}


def transition_matrix(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Counts of persona ``before`` -> ``after`` for debtors present in both mappings."""
    matrix = {row: dict.fromkeys(ALL_PERSONAS, 0) for row in ALL_PERSONAS}
    for debtor_id, previous in before.items():
        current = after.get(debtor_id)
        if current is not None:
            matrix[previous][current] += 1
    return matrix


def row_shares(matrix: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, float]]:
    """Each row of a transition matrix as shares of its total ("once a Tamara, always a Tamara?")."""
    shares = {}
    for row, cells in matrix.items():
        total = sum(cells.values())
        shares[row] = {col: (count / total if total else 0.0) for col, count in cells.items()}
    return shares


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with aligned columns."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
