"""The worker's open status pages: ``GET /health``, ``GET /ready`` and ``GET /model``.

The bodies are plain functions of the service's parts (:func:`health_body`, :func:`model_body`;
``/ready`` is :meth:`agents.service.Service.ready`), so the tests check them without a web
server; :func:`install_status_pages` adds them to the Faust app's web server. The debtor,
persona and metrics pages are :func:`agents.api.register_api`'s.
"""

from __future__ import annotations

from typing import Any

from debtor_segments.agents.model_sync import ModelHolder, ModelWriter, model_digest
from debtor_segments.agents.service import Service
from debtor_segments.streams.personas import PERSONAS, PROTOTYPES

__all__ = ["health_body", "install_status_pages", "model_body"]


def health_body(scheduler: Any, model_version: int, pending_writes: int) -> dict[str, Any]:
    """The body of ``GET /health``: the inbound ``scheduler``'s held records and the partitions
    it gave up waiting for (0 without a scheduler), the model's version, the pending writes.

    >>> health_body(None, 3, 0)
    {'status': 'ok', 'model_version': 3, 'held': 0, 'pending_writes': 0, 'gave_up': 0}
    """
    return {
        "status": "ok",
        "model_version": model_version,
        "held": getattr(scheduler, "held", 0),
        "pending_writes": pending_writes,
        "gave_up": getattr(scheduler, "gave_up", 0),
    }


def model_body(holder: ModelHolder, writer: ModelWriter) -> dict[str, Any]:
    """The body of ``GET /model``: the version and digest of the model in use, the persona it
    gives each persona's prototype, and whether this worker is the one learning."""
    model = holder.model
    probes = {persona: model.predict_one(PROTOTYPES[persona]).persona for persona in PERSONAS}
    return {
        "version": model.version,
        "digest": model_digest(model),
        "probes": probes,
        "writer": writer.active,
        "writer_version": writer.model.version if writer.model is not None else None,
    }


def install_status_pages(app: Any, service: Service, pending: Any) -> None:
    """Serve ``/health``, ``/ready`` and ``/model`` from ``app`` (``pending``: the state writes)."""

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json(health_body(getattr(app.consumer, "scheduler", None), service.holder.model.version, len(pending)))

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        ok, checks = service.ready()
        return web.json({"status": "ready" if ok else "not_ready", **checks}, status=200 if ok else 503)

    @app.page("/model")
    async def model_page(web: Any, request: Any) -> Any:
        return web.json(model_body(service.holder, service.writer))
