"""Commands that need a broker: ``worker``, ``publish`` and ``tail``.

Registered on the ``debtor-segments`` group in :mod:`agents.cli`. Every option falls back to
its ``DEBTOR_SEGMENTS_*`` environment variable (via :class:`agents.settings.Settings`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agents.inputs import open_input
from agents.kafka_io import (
    CHANGE_TOPICS,
    BrokerUnavailable,
    TopicMismatch,
    ensure_topics,
    make_producer,
    publish_lines,
    publish_plan,
)
from agents.kafka_io import tail as tail_topics
from agents.settings import Settings
from schemas import DEAD_LETTERS_TOPIC

__all__ = ["publish", "tail", "worker"]

_BROKER_HELP = "Kafka broker URL(s), Faust style [env DEBTOR_SEGMENTS_BROKER; default kafka://127.0.0.1:9092]."
_STORES = ("memory", "rocksdb")
_LOGLEVELS = ("debug", "info", "warning", "error")
_GUARANTEES = ("at_least_once", "exactly_once")
_PREFIX_HELP = "Prefix of every topic name, e.g. for tests or several deployments on one cluster [env DEBTOR_SEGMENTS_TOPIC_PREFIX]."


def _settings(**overrides: object) -> Settings:
    from agents.worker import with_overrides

    return with_overrides(Settings(), **overrides)


@click.command()
@click.option("--broker", help=_BROKER_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Local table state (RocksDB) [env DEBTOR_SEGMENTS_DATA_DIR; default ./data].")
@click.option("--web-port", type=int, help="HTTP port: /health, /ready, /model, /metrics [env DEBTOR_SEGMENTS_WEB_PORT; default 6066].")
@click.option("--partitions", type=click.IntRange(min=1), help="Partitions of the inbound topics and the state changelog [env DEBTOR_SEGMENTS_PARTITIONS; default 4].")
@click.option("--store", type=click.Choice(_STORES), help="Table store: memory (rebuilt from the changelog on start) or rocksdb (kept in --data-dir) [env DEBTOR_SEGMENTS_STORE; default memory].")
@click.option("--web-host", help="Host name or address other workers reach this one's API at (forwarded /debtors requests) [env DEBTOR_SEGMENTS_WEB_HOST; default 127.0.0.1].")
@click.option("--topic-prefix", help=_PREFIX_HELP)
@click.option("--app-id", help="Faust app id = consumer group [env DEBTOR_SEGMENTS_APP_ID; default PREFIX + debtor-segments].")
@click.option("--model-snapshot-every", type=click.IntRange(min=1), help="The model writer publishes a snapshot every N updates ... [env DEBTOR_SEGMENTS_MODEL_SNAPSHOT_EVERY; default 200]")
@click.option("--model-snapshot-seconds", type=click.FloatRange(min=0.1), help="... or this long after the last one, if it learned anything [env DEBTOR_SEGMENTS_MODEL_SNAPSHOT_SECONDS; default 5].")
@click.option("--loglevel", type=click.Choice(_LOGLEVELS), help="[env DEBTOR_SEGMENTS_LOGLEVEL; default info]")
@click.option("--broker-wait", type=click.FloatRange(min=0), default=60.0, show_default=True, help="Seconds to wait for the broker at start-up.")
@click.option(
    "--guarantee", type=click.Choice(_GUARANTEES),
    help="Processing guarantee: at_least_once (change events delivered before the state write) or exactly_once (Faust's "
    "Kafka transactions; experimental, see docs/reliability.md) [env DEBTOR_SEGMENTS_GUARANTEE; default "
    "at_least_once].",
)
@click.option("--group-instance-id", help="Static consumer-group membership id; '' derives it from the host name and data dir, 'off' disables it [env DEBTOR_SEGMENTS_GROUP_INSTANCE_ID].")
@click.option(
    "--session-timeout", "session_timeout_s", type=click.FloatRange(min=1),
    help="Seconds without heartbeat before the group gives a worker's partitions to others [env "
    "DEBTOR_SEGMENTS_SESSION_TIMEOUT_S; default 8].",
)
@click.option("--heartbeat-interval", "heartbeat_interval_s", type=click.FloatRange(min=0.1), help="Seconds between group heartbeats [env DEBTOR_SEGMENTS_HEARTBEAT_INTERVAL_S; default 1].")
@click.option("--standby-replicas", type=click.IntRange(min=0), help="Warm standby copies of each table partition on other workers [env DEBTOR_SEGMENTS_STANDBY_REPLICAS; default 1].")
@click.option(
    "--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Treatment policy (schemas/policy.json); reloaded when the file changes. None: no treatment events [env "
    "DEBTOR_SEGMENTS_POLICY].",
)
@click.option(
    "--model", "model_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Model snapshot to start from (debtor-segments fit), until the model topic holds a newer one [env "
    "DEBTOR_SEGMENTS_INITIAL_MODEL; default: the persona prototypes].",
)
def worker(
    broker: str | None,
    data_dir: Path | None,
    web_port: int | None,
    partitions: int | None,
    store: str | None,
    web_host: str | None,
    topic_prefix: str | None,
    app_id: str | None,
    model_snapshot_every: int | None,
    model_snapshot_seconds: float | None,
    loglevel: str | None,
    broker_wait: float,
    guarantee: str | None,
    group_instance_id: str | None,
    session_timeout_s: float | None,
    heartbeat_interval_s: float | None,
    standby_replicas: int | None,
    policy_path: Path | None,
    model_path: Path | None,
) -> None:
    """Run the Faust worker: segment the inbound topics into persona and quadrant changes."""
    from agents.topics import WorkerConfig, topic_plan
    from agents.worker import run_worker

    settings = _settings(
        broker=broker,
        data_dir=data_dir,
        web_port=web_port,
        partitions=partitions,
        store=store,
        web_host=web_host,
        topic_prefix=topic_prefix,
        app_id=app_id,
        model_snapshot_every=model_snapshot_every,
        model_snapshot_seconds=model_snapshot_seconds,
        loglevel=loglevel,
        guarantee=guarantee,
        group_instance_id=group_instance_id,
        session_timeout_s=session_timeout_s,
        heartbeat_interval_s=heartbeat_interval_s,
        standby_replicas=standby_replicas,
        policy=str(policy_path) if policy_path is not None else None,
        initial_model=str(model_path) if model_path is not None else None,
    )
    if settings.heartbeat_interval_s * 3 > settings.session_timeout_s:
        raise click.UsageError("heartbeat interval must be at most a third of the session timeout")
    if settings.policy:
        from agents.treatment_io import load_policy_for_cli

        load_policy_for_cli(Path(settings.policy))  # refused at start with every problem listed
    if settings.initial_model:
        from agents.inputs import load_model_file

        load_model_file(Path(settings.initial_model), must_exist=True)  # refused at start, not in the agent
    # The environment is not checked by click: say which value is wrong, not a traceback.
    for name, value, allowed in (
        ("store", settings.store, _STORES),
        ("loglevel", settings.loglevel, _LOGLEVELS),
        ("guarantee", settings.guarantee, _GUARANTEES),
    ):
        if value not in allowed:
            raise click.UsageError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    client_options = _client_options(settings)  # refuses an unknown security protocol before Faust starts
    config = WorkerConfig(settings)
    try:
        ensure_topics(
            settings.bootstrap_servers,
            topic_plan(config),
            wait_s=broker_wait,
            log=lambda text: click.echo(text, err=True),
            client_options=client_options,
        )
    except TopicMismatch as error:
        click.echo(
            f"Error: topics disagree with --partitions {settings.partitions}: {error}. "
            "Re-partitioning loses the per-debtor order: start with the partition count the topics have, "
            "or move to new topics (--topic-prefix).",
            err=True,
        )
        sys.exit(2)
    except BrokerUnavailable as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    sys.exit(run_worker(config))


def _client_options(settings: Settings) -> dict[str, object]:
    """The Kafka security options of every client of a command (docs/security.md)."""
    try:
        return settings.kafka_client_options()
    except ValueError as error:
        raise click.UsageError(str(error)) from None


@click.command()
@click.argument("input_path", metavar="FILE.jsonl")
@click.option("--broker", help=_BROKER_HELP)
@click.option("--topic-prefix", help=_PREFIX_HELP)
@click.option("--partitions", type=click.IntRange(min=1), help="Partitions for inbound topics that do not exist yet [env DEBTOR_SEGMENTS_PARTITIONS; default 4].")
def publish(input_path: str, broker: str | None, topic_prefix: str | None, partitions: int | None) -> None:
    """Send FILE.jsonl (- for stdin) to the inbound topics by event type, keyed by debtor_id.

    Lines that cannot be routed (bad JSON, unknown type, no debtor_id) go to the dead-letter
    topic with the reason and line number; everything else is validated by the worker.
    """
    settings = _settings(broker=broker, partitions=partitions, topic_prefix=topic_prefix)
    topic_prefix = settings.topic_prefix
    bootstrap = settings.bootstrap_servers
    client_options = _client_options(settings)
    stream = open_input(input_path)
    try:
        ensure_topics(bootstrap, publish_plan(topic_prefix, settings.partitions), wait_s=30.0, client_options=client_options)
        producer = make_producer(bootstrap, client_options=client_options)
    except (BrokerUnavailable, TopicMismatch) as error:
        raise click.ClickException(str(error)) from None
    try:
        stats = publish_lines(stream, producer, topic_prefix=topic_prefix)
    except OSError as error:
        raise click.ClickException(f"reading {input_path} failed: {error}") from None
    finally:
        producer.close(timeout=30)
        if stream is not sys.stdin.buffer:
            stream.close()
    click.echo(stats.summary(), err=True)
    if stats.errors:
        sys.exit(1)


@click.command()
@click.option("--broker", help=_BROKER_HELP)
@click.option("--topic-prefix", help=_PREFIX_HELP)
@click.option("--from-beginning", is_flag=True, help="Start at the oldest change event instead of the newest.")
@click.option("--max-messages", type=click.IntRange(min=1), help="Stop after N change events.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), help="Stop when nothing arrived for S seconds.")
@click.option("--dead-letters", "with_dead_letters", is_flag=True, help="Also print the dead-letter topic.")
def tail(broker: str | None, topic_prefix: str | None, from_beginning: bool, max_messages: int | None, timeout_s: float | None, with_dead_letters: bool) -> None:
    """Print persona and quadrant change events as JSON lines as they arrive."""
    settings = _settings(broker=broker, topic_prefix=topic_prefix)
    topic_prefix = settings.topic_prefix
    topics = [topic_prefix + name for name in CHANGE_TOPICS]
    if with_dead_letters:
        topics.append(topic_prefix + DEAD_LETTERS_TOPIC)
    try:
        count = tail_topics(
            settings.bootstrap_servers,
            topics,
            sys.stdout,
            from_beginning=from_beginning,
            max_messages=max_messages,
            timeout_s=timeout_s,
            client_options=_client_options(settings),
        )
    except TopicMismatch as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        return
    click.echo(f"{count} records", err=True)
