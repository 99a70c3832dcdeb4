"""Commands that need a broker: ``worker``, ``publish`` and ``tail``.

Registered on the ``debtor-segments`` group in :mod:`agents.cli`. Every option of a setting is
built from its declaration in :mod:`agents.settings` (help, variable, default) and falls back to
its ``DEBTOR_SEGMENTS_*`` environment variable when not given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from debtor_segments.agents.inputs import open_input
from debtor_segments.agents.kafka_io import (
    CHANGE_TOPICS,
    BrokerUnavailable,
    TopicMismatch,
    ensure_topics,
    make_producer,
    publish_lines,
    publish_plan,
)
from debtor_segments.agents.kafka_io import tail as tail_topics
from debtor_segments.agents.settings import Settings, declaration, declarations, with_overrides
from debtor_segments.schemas import DEAD_LETTERS_TOPIC

__all__ = ["publish", "tail", "worker"]

_Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _setting_option(name: str, *flags: str, help: str | None = None, **kwargs: Any) -> _Decorator:
    """A click option for the setting `name`, its help, variable and default from its declaration.

    `flags` default to ``--<name>`` with dashes; `help` replaces the declared help (a command's
    own wording), never the variable and default shown after it. A setting with choices gets
    them as the option's type. The option's own default is None: unset, the setting's
    environment variable (or its default) applies (:func:`_settings`).

    >>> command = click.command()(_setting_option("web_port", type=int)(lambda web_port: None))
    >>> [(option.opts, option.help) for option in command.params], command.make_context("x", []).params
    ([(['--web-port'], 'HTTP port: /health, /ready, /model, /metrics. [env DEBTOR_SEGMENTS_WEB_PORT; default 6066].')], {'web_port': None})
    """
    declared = declaration(name)
    shown = f"; default {declared.default}" if declared.default else ""
    if declared.choices:
        kwargs.setdefault("type", click.Choice(declared.choices))
    return click.option(*(flags or (f"--{name.replace('_', '-')}",)), help=f"{help or declared.help} [env {declared.env}{shown}].", **kwargs)


def _settings(**overrides: object) -> Settings:
    """The settings of the environment, with the options given on the command line over them."""
    return with_overrides(Settings(), **overrides)


@click.command()
@_setting_option("broker")
@_setting_option("data_dir", type=click.Path(file_okay=False, path_type=Path))
@_setting_option("web_port", type=int)
@_setting_option("partitions", type=click.IntRange(min=1))
@_setting_option("store")
@_setting_option("web_host")
@_setting_option("topic_prefix")
@_setting_option("app_id")
@_setting_option("model_snapshot_every", type=click.IntRange(min=1))
@_setting_option("model_snapshot_seconds", type=click.FloatRange(min=0.1))
@_setting_option("loglevel")
@click.option("--broker-wait", type=click.FloatRange(min=0), default=60.0, show_default=True, help="Seconds to wait for the broker at start-up.")
@_setting_option("guarantee")
@_setting_option("group_instance_id")
@_setting_option("session_timeout_s", "--session-timeout", "session_timeout_s", type=click.FloatRange(min=1))
@_setting_option("heartbeat_interval_s", "--heartbeat-interval", "heartbeat_interval_s", type=click.FloatRange(min=0.1))
@_setting_option("standby_replicas", type=click.IntRange(min=0))
@_setting_option(
    "policy",
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Treatment policy (schemas/policy.json); reloaded when the file changes. None: no treatment events.",
)
@_setting_option("initial_model", "--model", "model_path", type=click.Path(dir_okay=False, path_type=Path))
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
    from debtor_segments.agents.topics import WorkerConfig, topic_plan
    from debtor_segments.agents.worker import run_worker

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
        from debtor_segments.agents.treatment_io import load_policy_for_cli

        load_policy_for_cli(Path(settings.policy))  # refused at start with every problem listed
    if settings.initial_model:
        from debtor_segments.agents.inputs import load_model_file

        load_model_file(Path(settings.initial_model), must_exist=True)  # refused at start, not in the agent
    # The environment is not checked by click: say which value is wrong, not a traceback.
    for declared in declarations():
        value = getattr(settings, declared.name)
        if declared.choices and value not in declared.choices:
            raise click.UsageError(f"{declared.name} must be one of {', '.join(declared.choices)}, not {value!r}")
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
@_setting_option("broker")
@_setting_option("topic_prefix")
@_setting_option("partitions", type=click.IntRange(min=1), help="Partitions for inbound topics that do not exist yet.")
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
@_setting_option("broker")
@_setting_option("topic_prefix")
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
