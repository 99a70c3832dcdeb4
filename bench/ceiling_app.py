"""The floor cost of Faust itself: a minimal agent on the worker's inbound topics.

For every inbound record it parses the value with orjson and writes one changelogged table
entry (the raw value under the record key), with the Faust settings the worker uses
(``agents.faust_app.FAUST_TUNING``: raw serializers, commit cadence, fetch sizes; and the store).
Nothing else: no validation, no engine, no outbound sends. ``bench/kafka_path.py`` runs it as a subprocess::

    BENCH_PREFIX=bench-x- BENCH_APP_ID=bench-x-ceiling BENCH_STORE=memory BENCH_DATA_DIR=/tmp/d \\
        python bench/ceiling_app.py worker --web-port 6070 --loglevel warning

With ``BENCH_FORWARD=1`` (the latency floor) it also forwards one record in eight (by event
id) to the persona-changes topic as ``{"cause_event_id": ...}`` (about the worker's share of
records that emit) and waits for its delivery before the table write: the worker's order, kept
the simplest way (the worker defers the write instead, agents/pending.py); it then lingers 0 ms
instead of 5, as every wait would sit out the linger.
``/ready`` answers 200 once partitions are assigned.
"""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path
from typing import Any

import faust
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from debtor_segments.agents.faust_app import FAUST_TUNING
from debtor_segments.schemas import INBOUND_TOPICS, PERSONA_CHANGES_TOPIC

PREFIX = os.environ.get("BENCH_PREFIX", "")
APP_ID = os.environ.get("BENCH_APP_ID", PREFIX + "ceiling")
STORE = os.environ.get("BENCH_STORE", "memory")
DATA_DIR = Path(os.environ.get("BENCH_DATA_DIR", "./data")) / APP_ID
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "4"))
FORWARD = os.environ.get("BENCH_FORWARD") == "1"
DATA_DIR.mkdir(parents=True, exist_ok=True)

app = faust.App(
    APP_ID,
    broker=os.environ.get("BENCH_BROKER", "kafka://127.0.0.1:9092"),
    store="rocksdb://" if STORE == "rocksdb" else "memory://",
    datadir=str(DATA_DIR),
    topic_partitions=PARTITIONS,
    processing_guarantee="at_least_once",
    # 5 ms batches the changelog writes (the worker's default too); the latency floor waits
    # for deliveries, and each wait would sit out the linger.
    producer_linger=0.0 if FORWARD else 0.005,
    **FAUST_TUNING,
)
inbound = app.topic(
    *(PREFIX + name for name in INBOUND_TOPICS),
    key_type=bytes,
    value_type=bytes,
    partitions=PARTITIONS,
)
table = app.Table("ceiling-state", partitions=PARTITIONS, key_type=bytes, value_type=bytes)

forwarded = app.topic(PREFIX + PERSONA_CHANGES_TOPIC, key_type=bytes, value_type=bytes, partitions=PARTITIONS)
assigned = False


@app.agent(inbound, name="ceiling")
async def ceiling(stream: Any) -> None:
    async for event in stream.events():
        message = event.message
        obj = orjson.loads(message.value)
        if FORWARD and zlib.crc32(str(obj.get("event_id", "")).encode()) % 8 == 0:
            sent = await forwarded.send(key=message.key, value=orjson.dumps({"cause_event_id": obj["event_id"]}))
            await sent
        table[message.key] = message.value if obj else b""


@app.on_partitions_assigned.connect  # type: ignore[arg-type]
async def on_assigned(sender: Any, assigned_tps: Any, **kwargs: Any) -> None:
    global assigned
    assigned = True


@app.page("/ready")
async def ready(self: Any, request: Any) -> Any:
    return self.json({"ready": assigned}, status=200 if assigned else 503)


if __name__ == "__main__":
    app.main()
