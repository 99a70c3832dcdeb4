"""Split a py-spy profile of the worker into Faust's per-message machinery and our core.

Input: py-spy's collapsed stacks (``py-spy record --format raw --idle``), one line per distinct
stack, ``frame;frame;...;leaf count``, root first, each frame ``function (file:line)``.

Each sample goes to one bucket, the first rule that matches:

1. **core** - any frame in ``streams/`` (the pure engine; River, orjson and fastjsonschema
   called from it count here too: that is the engine's cost);
2. **idle** - the leaf waits: the event loop's ``select`` (selectors.py), an idle thread-pool
   worker, a thread parked on a condition;
3. by the leaf frame's package: ``agents/`` (our shell), ``faust``/``mode`` (Faust's stream,
   table, sensor and scheduling machinery), ``aiokafka``/``kafka`` (the client), ``prometheus_client``,
   ``asyncio`` (the event loop's own code), else *other*.

It also lists the top frames of this repository, Faust, aiokafka, Prometheus and River by
inclusive share (samples whose stack contains the frame), and the top leaf frames of the busy
(not idle) samples.

>>> raw = "\\n".join([
...     "run (faust/app.py:1);handle (agents/worker.py:5);process (streams/engine.py:9) 6",
...     "run (faust/app.py:1);_py_aiter (faust/streams.py:2) 3",
...     "run (faust/app.py:1);EpollSelector.select (selectors.py:468) 1",
... ])
>>> s = split(raw, root="")
>>> s["samples"], s["buckets"]["core (streams/)"], s["buckets"]["Faust (faust, mode)"], s["buckets"]["idle (waiting)"]
(10, 0.6, 0.3, 0.1)
>>> s["busy_buckets"]["core (streams/)"]
0.667
>>> s["top_inclusive"][0]["frame"]
'run (faust/app.py:1)'
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["BUCKETS", "split"]

BUCKETS = (
    "core (streams/)",
    "our shell (agents/)",
    "Faust (faust, mode)",
    "Kafka client (aiokafka, kafka)",
    "Prometheus (prometheus_client)",
    "event loop (asyncio)",
    "idle (waiting)",
    "other",
)
_FILE = re.compile(r"\((.*?):\d+\)$")
# Leaves that wait: the event loop's epoll, idle thread-pool workers (concurrent.futures blocks
# in a queue get, which py-spy shows as the _worker line), threads parked on a condition.
_IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "Condition.wait (threading.py", "Event.wait (threading.py")


# Packages whose frames the inclusive list shows (the generic asyncio, threading, click frames
# would head it with ~100 % and say nothing).
_OF_INTEREST = ("streams", "agents", "faust", "mode", "aiokafka", "prometheus_client", "river")


def _file(frame: str) -> str:
    match = _FILE.search(frame)
    return match.group(1) if match else ""


def _is(file: str, *parts: str) -> bool:
    return any(f"/{part}/" in f"/{file}" for part in parts)


def _bucket(frames: list[str], root: str) -> str:
    files = [_file(f).removeprefix(root).lstrip("/") for f in frames]
    if any(_is(f, "streams") and "site-packages" not in f for f in files):
        return BUCKETS[0]
    leaf, leaf_file = frames[-1], files[-1]
    if leaf_file == "selectors.py" or leaf.startswith(_IDLE_LEAVES):
        return BUCKETS[6]
    if _is(leaf_file, "agents") and "site-packages" not in leaf_file:
        return BUCKETS[1]
    if _is(leaf_file, "faust", "mode"):
        return BUCKETS[2]
    if _is(leaf_file, "aiokafka", "kafka"):
        return BUCKETS[3]
    if _is(leaf_file, "prometheus_client"):
        return BUCKETS[4]
    if _is(leaf_file, "asyncio"):
        return BUCKETS[5]
    return BUCKETS[7]


def split(raw: str, root: str | Path, top: int = 15) -> dict[str, Any]:
    """Shares of all samples per bucket, and the ``top`` frames by inclusive share.

    ``root`` is the checkout's path, stripped from frame files so that ``streams/`` and
    ``agents/`` mean this repository's packages (py-spy prints absolute paths for them).
    """
    buckets: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        bucket = _bucket(frames, str(root))
        buckets[bucket] += n
        if bucket != BUCKETS[6]:
            leaves[frames[-1]] += n
        for frame in set(frames):
            if _is(_file(frame).removeprefix(str(root)).lstrip("/"), *_OF_INTEREST):
                inclusive[frame] += n
    if not total:
        return {"samples": 0, "buckets": {}, "busy_buckets": {}, "top_inclusive": [], "top_self_busy": []}
    busy = total - buckets[BUCKETS[6]]
    return {
        "samples": total,
        "buckets": {name: round(buckets[name] / total, 3) for name in BUCKETS},
        # the same without the idle samples: shares of the time the process was on a CPU
        "busy_buckets": {name: round(buckets[name] / busy, 3) for name in BUCKETS if name != BUCKETS[6]} if busy else {},
        "top_inclusive": [{"frame": _short(frame, root), "share": round(n / total, 3)} for frame, n in inclusive.most_common(top)],
        # where the CPU goes: leaf frames of the busy samples, as shares of the busy samples
        "top_self_busy": [{"frame": _short(frame, root), "share": round(n / busy, 3)} for frame, n in leaves.most_common(top)] if busy else [],
    }


def _short(frame: str, root: str | Path) -> str:
    return frame.replace(f"{root}/", "") if str(root) else frame
