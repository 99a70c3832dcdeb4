"""The floor cost of Faust itself: a minimal agent on the worker's inbound topics.

For every inbound record it parses the value with orjson and writes one changelogged table
entry (the raw value under the record key), with the Faust settings the worker uses
(``agents.worker.FAUST_TUNING``: raw serializers, commit cadence, fetch sizes; and the store).
Nothing else: no validation, no engine, no outbound sends. ``bench/kafka_path.py`` runs it as a subprocess::

    BENCH_PREFIX=bench-x- BENCH_APP_ID=bench-x-ceiling BENCH_STORE=memory BENCH_DATA_DIR=/tmp/d \\
        python bench/ceiling_app.py worker --web-port 6070 --loglevel warning
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import faust
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.worker import FAUST_TUNING
from schemas import INBOUND_TOPICS

PREFIX = os.environ.get("BENCH_PREFIX", "")
APP_ID = os.environ.get("BENCH_APP_ID", PREFIX + "ceiling")
STORE = os.environ.get("BENCH_STORE", "memory")
DATA_DIR = Path(os.environ.get("BENCH_DATA_DIR", "./data")) / APP_ID
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "4"))
DATA_DIR.mkdir(parents=True, exist_ok=True)

app = faust.App(
    APP_ID,
    broker=os.environ.get("BENCH_BROKER", "kafka://127.0.0.1:9092"),
    store="rocksdb://" if STORE == "rocksdb" else "memory://",
    datadir=str(DATA_DIR),
    topic_partitions=PARTITIONS,
    processing_guarantee="at_least_once",
    producer_linger=0.005,
    **FAUST_TUNING,
)
inbound = app.topic(
    *(PREFIX + name for name in INBOUND_TOPICS),
    key_type=bytes,
    value_type=bytes,
    partitions=PARTITIONS,
)
table = app.Table(
    "ceiling-state", partitions=PARTITIONS, key_type=bytes, value_type=bytes
)


@app.agent(inbound, name="ceiling")
async def ceiling(stream: Any) -> None:
    async for event in stream.events():
        message = event.message
        obj = orjson.loads(message.value)
        table[message.key] = message.value if obj else b""


if __name__ == "__main__":
    app.main()
