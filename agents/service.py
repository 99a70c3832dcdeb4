"""The running service's parts, as the worker wires them: what the HTTP pages, the CLI and the
tests reach, so that none of them imports the worker (:mod:`agents.worker`) itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import faust
from faust.types import TP

from debtor_segments.agents.metrics import ServiceMetrics
from debtor_segments.agents.model_sync import ModelHolder, ModelReader, ModelWriter
from debtor_segments.agents.progress import PartitionProgress
from debtor_segments.agents.topics import WorkerConfig
from debtor_segments.agents.treatment_service import TreatmentService

if TYPE_CHECKING:
    from faust.transport.consumer import Consumer

__all__ = ["Service"]


@dataclass
class Service:
    """The Faust app and the parts its agents share (exposed for tests and the CLI)."""

    app: faust.App
    config: WorkerConfig
    metrics: ServiceMetrics
    holder: ModelHolder
    writer: ModelWriter
    reader: ModelReader
    table: Any
    assigned: set[TP] = field(default_factory=set)
    assigned_once: bool = False
    progress: PartitionProgress = field(default_factory=lambda: PartitionProgress(lambda tp: True))
    #: With a policy: the treatments (GET /debtors/{id} shows the debtor's contact facts from them).
    treatments: TreatmentService | None = None

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: partitions assigned, table recovery done, model loaded, and processing
        resumed: every owned inbound partition processed a record since its assignment or has
        nothing to process (:class:`agents.progress.PartitionProgress`)."""
        app = self.app
        try:
            recovered: bool = cast(Any, app.tables).recovery.completed.is_set()
            # The app's consumer is a faust Consumer (ConsumerT, its interface, lacks flow_active).
            flowing = app.flow_control.is_active() and cast("Consumer", app.consumer).flow_active
        except Exception:  # noqa: BLE001 - Faust internals, best effort
            recovered = flowing = False
        scheduler = getattr(app.consumer, "scheduler", None)
        caught_up = getattr(scheduler, "nothing_to_deliver", None) or (lambda tp: False)
        waiting = self.progress.waiting(caught_up) if flowing else None
        checks: dict[str, Any] = {
            "assigned": self.assigned_once,
            "rebalancing": bool(app.rebalancing),
            "recovery_done": recovered and not app.in_recovery,
            "model_loaded": self.holder.ready.is_set(),
            "processing": waiting == [],
            "partitions_waiting": len(waiting) if waiting is not None else None,
        }
        ok: bool = checks["assigned"] and not checks["rebalancing"] and checks["recovery_done"] and checks["model_loaded"] and checks["processing"]
        return ok, checks
