"""The one place where the worker changes private behaviour of aiokafka (and so of Faust).

**Static members leave the group on a graceful stop.** With static membership
(``group_instance_id``, agents/settings.py) a restarted worker takes its partitions back at once
instead of waiting for the group to notice its predecessor is gone; aiokafka then never sends a
LeaveGroup request, on a graceful stop neither (the Java client's default too). For a rolling
restart of several workers that means the stopped worker's partitions wait for its whole stop
and start (11-12 s measured, bench/failover.py scenario c) although another worker holds warm
standby copies of them. :func:`install` makes a static member leave the group when its consumer
closes (SIGTERM, a crash the worker handles), naming itself by member id *and* instance id
(LeaveGroup v3, KIP-345): the group rebalances at once, a survivor takes over, and the restarted
worker joins again. A process killed with SIGKILL sends nothing and keeps the static-membership
benefit: its restart within the session timeout is the same member.

:func:`install` checks at start-up that the installed aiokafka is one this was verified
against and still has the private pieces it relies on; if not it raises (the worker does not
start), rather than silently running without the behaviour the figures in docs/reliability.md
were measured with. Set ``DEBTOR_SEGMENTS_LEAVE_GROUP_ON_STOP=0`` to run without it.

**Partitions without a committed offset are rewound too.** After every rebalance Faust seeks each
assigned partition back to its committed offset (``perform_seek``), so records it fetched but
dropped unprocessed (the streams' queues are cleared when they resume after recovery; a message
of an older generation is skipped) are fetched again. aiokafka's ``seek_to_committed`` leaves a
partition with no committed offset (or offset 0) where its fetch position is: a partition taken
over from a member killed before it ever committed stayed fetched to its end with none of its
records processed until the next restart (tests/integration/test_reliability.py
``test_two_workers_one_killed_survivor_finishes``, about half of the runs before this).
:func:`install_seek_reset` makes the seek reset such partitions as the consumer's
``auto_offset_reset`` says (Faust's default: earliest), as a fresh consumer would start them.
Changelog partitions are left alone: Faust's recovery positions those itself. It is always
installed: without it the worker would not be at-least-once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from importlib.metadata import version
from typing import Any

__all__ = [
    "VERIFIED",
    "ConsumerView",
    "InternalsMismatch",
    "install",
    "install_seek_reset",
    "installed",
    "patch_transactional_commit",
    "seek_to_committed_or_reset",
    "skip_venusian_attach",
]

log = logging.getLogger("debtor_segments.faust_internals")

#: Package versions this module was verified against (tests/integration/test_failover.py).
VERIFIED = {"aiokafka": {"0.14.0"}, "faust-streaming": {"0.15.3"}}

#: The patches in place in this process, by name: ``leave_group`` (:func:`install`),
#: ``seek_reset`` (:func:`install_seek_reset`).
_patched: set[str] = set()


class InternalsMismatch(RuntimeError):
    """The installed aiokafka/Faust differ from what this module was verified against."""


def installed() -> bool:
    """Whether :func:`install` patched the client in this process."""
    return "leave_group" in _patched


def _once(name: str, patch: Callable[[], None]) -> None:
    """Apply ``patch`` unless the patch ``name`` is in place already (idempotent installs).

    Whatever ``patch`` raises (:class:`InternalsMismatch`: its start-up check failed) is
    raised, and the patch does not count as in place: the worker refuses to start.
    """
    if name not in _patched:
        patch()
        _patched.add(name)


def _check_versions() -> None:
    found = {name: version(name) for name in VERIFIED}
    wrong = {name: v for name, v in found.items() if v not in VERIFIED[name]}
    if wrong:
        raise InternalsMismatch(
            f"agents/faust_internals.py was verified with {VERIFIED}, found {found}: re-verify it "
            "(tests/integration/test_failover.py, tests/integration/test_faust_internals.py, "
            "bench/failover.py) and extend VERIFIED: the worker needs it to rewind partitions "
            "without a committed offset after a rebalance"
        )


def _require(owner: Any, names: tuple[str, ...], what: str) -> Any:
    """``owner`` if it has every method in ``names``, else :class:`InternalsMismatch`."""
    missing = [name for name in names if not callable(getattr(owner, name, None))]
    if missing:
        raise InternalsMismatch(f"{what} lacks {missing}")
    return owner


def _check() -> Any:
    _check_versions()
    from aiokafka.consumer import group_coordinator

    return _require(group_coordinator.GroupCoordinator, ("_maybe_leave_group", "_send_req", "reset_generation"), "aiokafka's GroupCoordinator")


def _leave_request() -> Any:
    """aiokafka's LeaveGroup request knows v0/v1 only (no instance id): v3 built here."""
    from aiokafka.protocol.api import Request, RequestStruct, Response
    from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

    # aiokafka ships no type hints: its protocol classes are Any to mypy.
    class LeaveGroupResponse_v3(Response):  # type: ignore[misc]
        API_KEY = 13
        API_VERSION = 3
        SCHEMA = Schema(
            ("throttle_time_ms", Int32),
            ("error_code", Int16),
            ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")), ("error_code", Int16))),
        )

    class LeaveGroupRequest_v3(RequestStruct):  # type: ignore[misc]
        API_KEY = 13
        API_VERSION = 3
        RESPONSE_TYPE = LeaveGroupResponse_v3
        SCHEMA = Schema(("group", String("utf-8")), ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))))

    class StaticLeaveGroupRequest(Request[LeaveGroupRequest_v3]):  # type: ignore[misc]
        API_KEY = 13

        def __init__(self, group: str, member_id: str, instance_id: str) -> None:
            self._group, self._member_id, self._instance_id = group, member_id, instance_id

        def build(self, request_struct_class: type[LeaveGroupRequest_v3]) -> LeaveGroupRequest_v3:
            return request_struct_class(self._group, [(self._member_id, self._instance_id)])

    return StaticLeaveGroupRequest


def install() -> None:
    """Make static members leave their group when the consumer closes (idempotent).

    Raises
    ------
    InternalsMismatch
        If aiokafka/Faust are not the versions verified, or aiokafka's GroupCoordinator lacks
        the private methods patched.
    """
    _once("leave_group", _install_leave_group)


def _install_leave_group() -> None:
    coordinator = _check()
    request_class = _leave_request()
    original = coordinator._maybe_leave_group

    async def _maybe_leave_group(self: Any) -> None:
        instance_id = getattr(self, "_group_instance_id", None)
        if instance_id is None or self.generation <= 0:
            await original(self)
            return
        try:
            response = await self._send_req(request_class(self.group_id, self.member_id, instance_id))
        except Exception as error:  # noqa: BLE001 - best effort, as aiokafka's own leave
            log.warning("static member %s could not leave group %s: %s", instance_id, self.group_id, error)
        else:
            codes = [response.error_code, *(member[2] for member in response.members)]
            if any(codes):
                log.warning("static member %s leaving group %s: error codes %s", instance_id, self.group_id, codes)
            else:
                log.info("static member %s left group %s", instance_id, self.group_id)
        self.reset_generation()

    coordinator._maybe_leave_group = _maybe_leave_group


# --- the seek after a rebalance ----------------------------------------------------------------


async def seek_to_committed_or_reset(consumer: Any, is_changelog: Callable[[Any], bool], reset: str) -> dict[Any, int | None]:
    """Seek every assigned partition of an ``aiokafka.AIOKafkaConsumer`` to its committed
    offset, and one without a committed offset (none, or 0, which aiokafka does not seek to)
    to where ``reset`` (``earliest``/``latest``) starts it; ``is_changelog`` partitions are
    only sought to committed offsets, as aiokafka does. Returns the committed offsets
    (None: none), as ``seek_to_committed`` does."""
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    unset = [tp for tp, offset in committed.items() if (offset is None or offset <= 0) and not is_changelog(tp)]
    if unset and reset == "earliest":
        await consumer.seek_to_beginning(*unset)
    elif unset and reset == "latest":
        await consumer.seek_to_end(*unset)
    return committed


def install_seek_reset() -> None:
    """Make Faust's seek after a rebalance also rewind partitions without a committed offset
    (idempotent; see the module docstring).

    Raises
    ------
    InternalsMismatch
        If aiokafka/Faust are not the versions verified, or Faust's consumer thread lacks the
        methods the seek uses.
    """
    _once("seek_reset", _install_seek_reset)


def _install_seek_reset() -> None:
    _check_versions()
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    _require(AIOKafkaConsumerThread, ("seek_to_committed", "call_thread", "_ensure_consumer"), "Faust's AIOKafkaConsumerThread")

    async def seek_to_committed(self: Any) -> Any:
        changelogs = self.app.tables.changelog_topics
        reset = self.app.conf.consumer_auto_offset_reset
        return await self.call_thread(seek_to_committed_or_reset, self._ensure_consumer(), lambda tp: tp.topic in changelogs, reset)

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]


# --- the consumer as the inbound scheduler sees it --------------------------------------------


class ConsumerView:
    """What :class:`agents.scheduler.AligningScheduler` reads of Faust's consumer and of the
    aiokafka consumer under it: the scheduler's port, so its tests fake this, not private names.

    Every read but :meth:`deliverable` is best effort (None/False while the consumer is not
    started or is between generations): they only decide how long records wait. A wrong
    :meth:`deliverable` would let Faust skip a record and commit it unprocessed, so it fails
    closed: when it cannot tell, nothing is deliverable and records stay held.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._hooked = False
        self._fetch_active: set[Any] | None = None
        # deliverable() runs once per fetch: a failure is logged when it starts, not per fetch.
        self._failing = False

    def assignment(self, topics: frozenset[str]) -> set[Any] | None:
        """Assigned partitions of ``topics``, None if unknown."""
        try:
            return {tp for tp in self.app.consumer.assignment() if tp.topic in topics}
        except Exception:  # noqa: BLE001 - best effort (see the class docstring)
            return None

    def highwater(self, tp: Any) -> int | None:
        try:
            highwater: int | None = self.app.consumer.highwater(tp)
            return highwater
        except Exception:  # noqa: BLE001 - best effort read (see the class docstring)
            return None

    def position(self, tp: Any) -> int | None:
        """Next offset the consumer will fetch."""
        try:
            consumer = self.app.consumer._thread._ensure_consumer()
            state = consumer._subscription.subscription.assignment.state_value(tp)
            return state.position if state is not None and state.has_valid_position else None
        except Exception:  # noqa: BLE001 - best effort read (see the class docstring)
            return None

    def client_backlog(self, topics: frozenset[str]) -> bool:
        """Whether the Kafka client holds fetched records of ``topics`` it has not handed out
        yet, or Faust paused one of their partitions because its stream buffer is full."""
        try:
            consumer = self.app.consumer
            fetched = consumer._thread._ensure_consumer()._fetcher._records
            return any(tp.topic in topics for tp in (*consumer._buffered_partitions, *fetched))
        except Exception:  # noqa: BLE001 - best effort read (see the class docstring)
            return False

    def settling(self) -> bool:
        """Whether a rebalance (with its recovery and seek) is under way.

        Faust clears the streams' queues when it resumes after recovery and only then seeks
        back to the committed offsets; a record released before that would be dropped from
        the queue yet count as read. When unknown: settling (release nothing).
        """
        try:
            app = self.app
            return bool(app.rebalancing) or not app.flow_control.is_active() or not app.consumer.flow_active
        except Exception:  # noqa: BLE001 - fail closed
            return True

    def deliverable(self) -> Callable[[Any], bool]:
        """Whether Faust hands a record of a partition to the streams in the current fetch.

        Faust silently skips records of partitions that are paused (recovery, rebalance) and
        later counts the skipped offsets as a gap it may commit. It filters a fetch by the
        set of active partitions it took *before* awaiting the fetch (the live set may have
        been replaced since: a partition resumed after recovery), so that set is captured from
        Faust's ``_wait_next_records``. Fails closed: nothing is deliverable when unknown.
        """
        try:
            consumer = self.app.consumer
            # Faust's own sets, not copies: Faust checks them as they are when it yields.
            buffered = consumer._buffered_partitions
            if not self._hooked:
                self._hook(consumer)
                active = consumer._get_active_partitions()
            else:
                active = self._fetch_active
        except Exception:
            if not self._failing:
                log.exception("cannot tell which partitions Faust delivers: holding the records")
            self._failing = True
            return lambda tp: False
        self._failing = False
        if active is None:
            return lambda tp: True  # a client-only app: Faust filters nothing
        return lambda tp: tp in active or tp in buffered

    def _hook(self, consumer: Any) -> None:
        original = consumer._wait_next_records

        async def wait_next_records(timeout: float) -> Any:
            records, active = await original(timeout)
            self._fetch_active = active
            return records, active

        consumer._wait_next_records = wait_next_records
        self._hooked = True


def patch_transactional_commit() -> None:
    """Make Faust's exactly_once commit work with aiokafka: faust-streaming 0.15 passes its own
    ``TP`` tuples to ``send_offsets_to_transaction``, which aiokafka rejects ("Key should be
    TopicPartition instance"). Convert the keys; idempotent."""
    from aiokafka.structs import TopicPartition
    from faust.transport.drivers import aiokafka as driver

    original = driver.Producer.commit_transactions
    if getattr(original, "_debtor_segments", False):
        return

    async def commit_transactions(self: Any, tid_to_offset_map: Mapping[str, Mapping[Any, int]], group_id: str, start_new_transaction: bool = True) -> None:
        converted = {tid: {TopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()} for tid, offsets in tid_to_offset_map.items()}
        await original(self, converted, group_id, start_new_transaction=start_new_transaction)

    commit_transactions._debtor_segments = True  # type: ignore[attr-defined]
    driver.Producer.commit_transactions = commit_transactions  # type: ignore[method-assign]


# --- local RocksDB store: compaction after erasure, files of partitions no longer owned ---------


def _rocksdb_store(table: Any) -> Any | None:
    """The table's Faust RocksDB store, or None for another store (memory: nothing on disk).

    Raises :class:`InternalsMismatch` if it is a RocksDB store without the private pieces used
    here (``_dbs``: partition -> open DB; ``partition_path``)."""
    from faust.stores.rocksdb import Store

    store = getattr(table, "data", None)
    if not isinstance(store, Store):
        return None
    if not isinstance(getattr(store, "_dbs", None), dict) or not callable(getattr(store, "partition_path", None)):
        raise InternalsMismatch("faust.stores.rocksdb.Store lacks _dbs or partition_path")
    return store


def compact_partitions(table: Any, partitions: set[int]) -> list[int]:
    """Flush and fully compact the open RocksDB partitions of ``table`` in ``partitions``.

    After an erasure the deleted state is still in older SST files (and the memtable's WAL)
    until a compaction rewrites them; a full-range compaction to the bottommost level drops
    the deleted key and its tombstone. RocksDB's MANIFEST still names the key as a former
    file boundary until the store is next opened (a restart writes a new MANIFEST and deletes
    the old one): documented residue. Blocking: run it in a thread. Returns the partitions
    compacted (those open here; a store other than RocksDB compacts nothing).
    """
    from rocksdict import BottommostLevelCompaction, CompactOptions

    store = _rocksdb_store(table)
    if store is None:
        return []
    # Forced: a store whose data is in one file would otherwise be moved down a level as it
    # is, tombstone and all, instead of rewritten (seen: the erased key stayed in the SST).
    options = CompactOptions()
    options.set_bottommost_level_compaction(BottommostLevelCompaction.force())
    done = []
    for partition in sorted(partitions):
        db = store._dbs.get(partition)
        if db is None:
            continue
        db.flush()
        db.compact_range(None, None, options)
        done.append(partition)
    return done


def unowned_partition_paths(table: Any, owned: set[int], partitions: int) -> list[Any]:
    """Partition directories of ``table``'s RocksDB store on disk for partitions this worker
    neither serves nor keeps a standby of (``owned``), and does not hold open."""
    store = _rocksdb_store(table)
    if store is None:
        return []
    return [path for p in range(partitions) if p not in owned and p not in store._dbs and (path := store.partition_path(p)).exists()]


# --- start-up time --------------------------------------------------------------------------


def skip_venusian_attach(app: Any) -> bool:
    """Make Faust's decorators skip their venusian registration when autodiscovery is off.

    Every ``@app.agent``/``timer``/``task``/``page`` calls ``venusian.attach``, which calls
    ``inspect.getframeinfo``, which resolves the real path of every loaded module: 13 calls,
    0.64 s of the worker's start (profiled; more on a loaded machine), all of it spent
    restarting a killed worker. The registration only serves ``autodiscover``, which the
    worker turns off. Applied only with a verified Faust and autodiscovery off (otherwise
    nothing changes); returns whether it was applied.
    """
    from faust.utils import venusian

    if version("faust-streaming") not in VERIFIED["faust-streaming"] or app.conf.autodiscover:
        return False
    if not callable(getattr(venusian, "attach", None)):
        return False
    venusian.attach = lambda fun, category, **kwargs: None
    return True
