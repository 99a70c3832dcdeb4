"""The portfolio page renders in a real headless Chromium: a screenshot shows its figures."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest

from debtor_segments.streams.page import COLOURS, render_page
from tests.integration.conftest import in_ci

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _pixels(png: bytes) -> tuple[int, int, Counter[tuple[int, int, int]]]:
    """Decode an 8-bit RGB(A) non-interlaced PNG (what Chromium writes) into colour counts."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data, width = 8, b"", 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour_type in (2, 6) and interlace == 0
            channels = 4 if colour_type == 6 else 3
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    raw = zlib.decompress(data)
    stride = width * channels
    previous = bytearray(stride)
    counts: Counter[tuple[int, int, int]] = Counter()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        counts.update(tuple(line[i : i + 3]) for i in range(0, stride, channels))
        previous = line
    return width, height, counts


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_the_page_renders_its_figures_in_chromium(tmp_path: Path) -> None:
    if CHROMIUM is None:
        # scripts/test installs it; under CI a missing browser fails, never skips.
        reason = "needs the Debian chromium package (apt-get install chromium)"
        if in_ci():
            pytest.fail(f"[CI] {reason}", pytrace=False)
        pytest.skip(reason)
    personas = [(f"2026-0{m}", {"tamara": 50 + m, "bryan": 20, "job": 10, "saida": 8, "hendrik-jan": 4, "unknown": 8 - m}) for m in range(1, 7)]
    quadrants = [(f"2026-0{m}", {"willing_able": 10, "willing_unable": 20, "unwilling_able": 30, "unwilling_unable": 40}) for m in range(1, 7)]
    transitions = {"tamara": {"tamara": 1.0, "bryan": 0.0}, "bryan": {"tamara": 0.2, "bryan": 0.8}}
    figures = {"debtors": 300, "collected_share": 0.3, "collected_share_ci95": [0.25, 0.35], "payer_rate": 0.4, "payer_rate_ci95": [0.35, 0.45]}
    experiments = {
        "policy_version": "v1",
        "experiments": {
            "x": {
                "segment": "tamara",
                "mode": "fixed",
                "horizon_days": 60,
                "metric": "collected_share",
                "segments": {"all": {"a": {f"d{h}": figures for h in (30, 60, 90)}, "b": {f"d{h}": figures for h in (30, 60, 90)}}},
                "decision": {"decision": "winner", "winner": "b", "days": 66},
            }
        },
    }
    page = tmp_path / "page.html"
    page.write_text(render_page("Test portfolio", personas, quadrants, transitions, experiments), encoding="utf-8")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=800,1600", f"--screenshot={shot}", page.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    width, height, counts = _pixels(shot.read_bytes())
    assert (width, height) == (800, 1600)
    # The stacked bars (persona colours), the heat map's darkest cell and the arms' intervals.
    assert counts[_rgb(COLOURS["tamara"])] > 5000
    assert counts[_rgb(COLOURS["willing_unable"])] > 2000
    assert counts[(30, 30, 200)] > 500
    assert counts[_rgb("#1f77b4")] > 200 and counts[_rgb("#e377c2")] > 200
