"""The peer: the Quix Streams + River pipeline a typical user would write instead of this service.

It reads the same inbound topics as the worker (``payments``, ``contacts``, ``ratings``,
``erasure-requests`` under a topic prefix), and per event does what such a user would:

1. parse the JSON value (Quix's ``json`` deserializer, which is orjson);
2. update a small per-debtor state (counts and sums) in Quix's RocksDB state, which Quix
   backs with a changelog topic;
3. learn and predict one scaled online k-means (``preprocessing.StandardScaler() |
   cluster.KMeans()``, River) on the debtor's features;
4. emit ``{"debtor_id", "cause_event_id", "cluster", "previous"}`` to a change topic when the
   debtor's cluster changed.

It does not do what the worker does beyond that (no schema validation, no idempotency, no
personas or quadrants, no shared model across workers, no event-time lateness rules): it is
the baseline the issue compares against, not a replacement. ``bench/kafka_path.py`` runs it as
a subprocess beside the worker (``throughput``) and measures it the same way, from the
consumer group's committed offsets::

    python bench/peer_quix.py --prefix bench-x- --app-id bench-x-peer --state-dir /tmp/d

The per-event step (:func:`update_state`, :func:`features`, :class:`Segmenter`) needs only
River and orjson, so it is importable and tested without quixstreams, which is in the
``bench`` extra only (``pip install -e '.[bench]'``).

Commits: every 1 s or 1,000 records, the worker's cadence (``agents.faust_app.FAUST_TUNING``),
so both lose and re-process the same window on a crash and are measured alike (Quix's default
is 5 s, which would leave fewer commits than the measurement needs on short runs).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from river import cluster, preprocessing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from debtor_segments.schemas import INBOUND_TOPICS

__all__ = [
    "CHANGES_TOPIC",
    "STATE_KEY",
    "Segmenter",
    "build_app",
    "features",
    "main",
    "update_state",
]

#: The peer's change topic (under the prefix): bench-only, not one of the service's topics.
CHANGES_TOPIC = "peer.segment-changes"
#: The one key under which a debtor's state lives in the Quix state of its message key.
STATE_KEY = "debtor"

_COUNTS = {
    "claim_opened": "claims",
    "arrangement_agreed": "arrangements",
    "payment_received": "payments",
    "installment_missed": "missed",
    "claim_closed": "closed",
    "contact_attempted": "attempts",
    "contact_responded": "responses",
    "contact_initiated": "initiated",
    "call_rated": "ratings",
}


def _number(value: Any) -> int:
    """``value`` if it is a number, else 0: the simulated portfolio carries a few malformed
    events (``"amount_cents": "ten"``) that the worker dead-letters; the peer ignores the field.

    >>> _number(5), _number("ten"), _number(None)
    (5, 0, 0)
    """
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def update_state(state: Mapping[str, Any] | None, event: Mapping[str, Any]) -> dict[str, Any]:
    """The debtor's state after ``event``: counts per event type, cents owed and paid, stars.

    A new dict (the state read from Quix is left alone), as a user would write it.

    >>> s = update_state(None, {"type": "claim_opened", "principal_cents": 10000})
    >>> s = update_state(s, {"type": "payment_received", "amount_cents": 2500})
    >>> s["claims"], s["payments"], s["owed"], s["paid"], s["n"]
    (1, 1, 10000, 2500, 2)
    """
    new = dict(state) if state else {"n": 0, "owed": 0, "paid": 0, "stars": 0}
    kind = event.get("type")
    counter = _COUNTS.get(kind)  # type: ignore[arg-type]
    if counter:
        new[counter] = new.get(counter, 0) + 1
    if kind == "claim_opened":
        new["owed"] += _number(event.get("principal_cents"))
    elif kind == "payment_received":
        new["paid"] += _number(event.get("amount_cents"))
    elif kind == "call_rated":
        new["stars"] += _number(event.get("stars"))
    new["n"] += 1
    return new


def features(state: Mapping[str, Any]) -> dict[str, float]:
    """The k-means input of one debtor: payment share, reliability, responsiveness, rating.

    >>> f = features({"n": 4, "owed": 10000, "paid": 2500, "stars": 0, "payments": 1, "attempts": 2, "responses": 1})
    >>> f["paid_share"], f["response_rate"], f["missed_rate"]
    (0.25, 0.5, 0.0)
    """
    get = state.get
    payments, missed = get("payments", 0), get("missed", 0)
    ratings = get("ratings", 0)
    return {
        "paid_share": min(1.0, get("paid", 0) / get("owed", 0)) if get("owed", 0) else 0.0,
        "missed_rate": missed / (payments + missed) if payments + missed else 0.0,
        "response_rate": get("responses", 0) / get("attempts", 0) if get("attempts", 0) else 0.0,
        "initiated": float(get("initiated", 0)),
        "stars": get("stars", 0) / ratings if ratings else 0.0,
        "activity": math.log1p(get("n", 0)),
    }


class Segmenter:
    """One scaled online k-means, learned and asked once per event (what the peer does per event).

    >>> seg = Segmenter()
    >>> s = update_state(None, {"type": "claim_opened", "principal_cents": 100})
    >>> cluster_id = seg.step(s)
    >>> isinstance(cluster_id, int)
    True
    """

    def __init__(self, n_clusters: int = 5, seed: int = 42) -> None:
        self.model = preprocessing.StandardScaler() | cluster.KMeans(n_clusters=n_clusters, seed=seed)

    def step(self, state: Mapping[str, Any]) -> int:
        """Learn the debtor's features, then predict its cluster."""
        x = features(state)
        self.model.learn_one(x)
        return int(self.model.predict_one(x))


def process(value: Mapping[str, Any], state: Any, segmenter: Segmenter) -> dict[str, Any] | None:
    """One event against the debtor's Quix ``state``: the change record, or None if unchanged.

    ``state`` needs ``get``, ``set`` and ``delete`` (Quix's ``State``; a dict-backed stand-in in tests).

    >>> class S(dict):
    ...     def set(self, k, v): self[k] = v
    ...     def delete(self, k): self.pop(k, None)
    >>> st, seg = S(), Segmenter()
    >>> change = process({"type": "claim_opened", "debtor_id": "d1", "event_id": "e1", "principal_cents": 5}, st, seg)
    >>> change["debtor_id"], change["previous"], st["debtor"]["n"]
    ('d1', None, 1)
    >>> process({"type": "erasure_requested", "debtor_id": "d1", "event_id": "e2"}, st, seg), "debtor" in st
    (None, False)
    """
    if value.get("type") == "erasure_requested":
        state.delete(STATE_KEY)
        return None
    debtor = update_state(state.get(STATE_KEY), value)
    previous = debtor.get("cluster")
    debtor["cluster"] = segmenter.step(debtor)
    state.set(STATE_KEY, debtor)
    if debtor["cluster"] == previous:
        return None
    return {"debtor_id": value.get("debtor_id"), "cause_event_id": value.get("event_id"),
            "cluster": debtor["cluster"], "previous": previous}  # fmt: skip


def build_app(prefix: str, app_id: str, broker: str, state_dir: str, *, partitions: int = 4) -> Any:
    """The Quix ``Application`` with its dataframe: the inbound topics concatenated, one
    stateful apply, a filter and ``to_topic``. Imports quixstreams (the ``bench`` extra)."""
    from quixstreams import Application
    from quixstreams.models import TopicConfig

    app = Application(
        broker_address=broker,
        consumer_group=app_id,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        commit_every=int(os.environ.get("BENCH_PEER_COMMIT_EVERY", "1000")),
        state_dir=state_dir,
        loglevel=os.environ.get("BENCH_PEER_LOGLEVEL", "WARNING"),
        processing_guarantee="at-least-once",
    )
    segmenter = Segmenter()
    frames = [app.dataframe(app.topic(prefix + name, value_deserializer="json")) for name in INBOUND_TOPICS]
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)  # Quix aligns the partitions of the topics by timestamp
    sdf = sdf.apply(lambda value, state: process(value, state, segmenter), stateful=True)
    sdf = sdf.filter(lambda change: change is not None)
    changes = app.topic(
        prefix + CHANGES_TOPIC,
        value_serializer="json",
        config=TopicConfig(num_partitions=partitions, replication_factor=1),
    )
    sdf.to_topic(changes)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="")
    parser.add_argument("--app-id", required=True, help="the consumer group (and state/changelog names)")
    parser.add_argument("--broker", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args(argv)
    broker = args.broker.removeprefix("kafka://")
    build_app(args.prefix, args.app_id, broker, args.state_dir, partitions=args.partitions).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
