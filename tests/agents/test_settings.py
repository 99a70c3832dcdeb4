"""The settings' declarations (:mod:`agents.settings`): variables, defaults and help, once.

The variable names and defaults are a contract (deployments set them; docs name them): the table
below is today's, and a change to it must be deliberate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import pytest

from debtor_segments.agents.cli import main
from debtor_segments.agents.settings import ENV_PREFIX, Settings, declaration, declarations, with_overrides

# Field -> (environment variable, default as its text, default as the field's value).
CONTRACT: dict[str, tuple[str, str, object]] = {
    "broker": ("DEBTOR_SEGMENTS_BROKER", "kafka://127.0.0.1:9092", "kafka://127.0.0.1:9092"),
    "data_dir": ("DEBTOR_SEGMENTS_DATA_DIR", "./data", Path("data")),
    "web_port": ("DEBTOR_SEGMENTS_WEB_PORT", "6066", 6066),
    "web_host": ("DEBTOR_SEGMENTS_WEB_HOST", "127.0.0.1", "127.0.0.1"),
    "web_bind": ("DEBTOR_SEGMENTS_WEB_BIND", "127.0.0.1", "127.0.0.1"),
    "peer_secret": ("DEBTOR_SEGMENTS_PEER_SECRET", "", ""),
    "kafka_security_protocol": ("DEBTOR_SEGMENTS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT"),
    "kafka_sasl_mechanism": ("DEBTOR_SEGMENTS_KAFKA_SASL_MECHANISM", "PLAIN", "PLAIN"),
    "kafka_username": ("DEBTOR_SEGMENTS_KAFKA_USERNAME", "", ""),
    "kafka_password": ("DEBTOR_SEGMENTS_KAFKA_PASSWORD", "", ""),
    "kafka_ca_file": ("DEBTOR_SEGMENTS_KAFKA_CA_FILE", "", ""),
    "partitions": ("DEBTOR_SEGMENTS_PARTITIONS", "4", 4),
    "store": ("DEBTOR_SEGMENTS_STORE", "memory", "memory"),
    "max_amount_cents": ("DEBTOR_SEGMENTS_MAX_AMOUNT_CENTS", "1000000000", 1_000_000_000),
    "lateness_days": ("DEBTOR_SEGMENTS_LATENESS_DAYS", "7", 7.0),
    "earliest_event": ("DEBTOR_SEGMENTS_EARLIEST_EVENT", "2000-01-01T00:00:00Z", "2000-01-01T00:00:00Z"),
    "max_future_s": ("DEBTOR_SEGMENTS_MAX_FUTURE_S", "86400", 86400.0),
    "max_record_bytes": ("DEBTOR_SEGMENTS_MAX_RECORD_BYTES", "65536", 65536),
    "api_tokens": ("DEBTOR_SEGMENTS_API_TOKENS", "", ""),
    "id_secret": ("DEBTOR_SEGMENTS_ID_SECRET", "", ""),
    "signing_secret": ("DEBTOR_SEGMENTS_SIGNING_SECRET", "", ""),
    "debug_ids": ("DEBTOR_SEGMENTS_DEBUG_IDS", "", False),
    "topic_prefix": ("DEBTOR_SEGMENTS_TOPIC_PREFIX", "", ""),
    "app_id": ("DEBTOR_SEGMENTS_APP_ID", "", ""),
    "loglevel": ("DEBTOR_SEGMENTS_LOGLEVEL", "info", "info"),
    "guarantee": ("DEBTOR_SEGMENTS_GUARANTEE", "at_least_once", "at_least_once"),
    "model_snapshot_every": ("DEBTOR_SEGMENTS_MODEL_SNAPSHOT_EVERY", "200", 200),
    "live_window_s": ("DEBTOR_SEGMENTS_LIVE_WINDOW_S", "60", 60.0),
    "pending_writes": ("DEBTOR_SEGMENTS_PENDING_WRITES", "1000", 1000),
    "model_snapshot_seconds": ("DEBTOR_SEGMENTS_MODEL_SNAPSHOT_SECONDS", "5", 5.0),
    "producer_linger_ms": ("DEBTOR_SEGMENTS_PRODUCER_LINGER_MS", "5", 5.0),
    "policy": ("DEBTOR_SEGMENTS_POLICY", "", ""),
    "default_timezone": ("DEBTOR_SEGMENTS_DEFAULT_TIMEZONE", "Europe/Amsterdam", "Europe/Amsterdam"),
    "initial_model": ("DEBTOR_SEGMENTS_INITIAL_MODEL", "", ""),
    "group_instance_id": ("DEBTOR_SEGMENTS_GROUP_INSTANCE_ID", "", ""),
    "session_timeout_s": ("DEBTOR_SEGMENTS_SESSION_TIMEOUT_S", "8", 8.0),
    "heartbeat_interval_s": ("DEBTOR_SEGMENTS_HEARTBEAT_INTERVAL_S", "1", 1.0),
    "standby_replicas": ("DEBTOR_SEGMENTS_STANDBY_REPLICAS", "1", 1),
    "leave_group_on_stop": ("DEBTOR_SEGMENTS_LEAVE_GROUP_ON_STOP", "1", True),
    "changelog_segment_ms": ("DEBTOR_SEGMENTS_CHANGELOG_SEGMENT_MS", "21600000", 21_600_000),
    "changelog_max_compaction_lag_ms": ("DEBTOR_SEGMENTS_CHANGELOG_MAX_COMPACTION_LAG_MS", "86400000", 86_400_000),
    "changelog_min_compaction_lag_ms": ("DEBTOR_SEGMENTS_CHANGELOG_MIN_COMPACTION_LAG_MS", "0", 0),
    "changelog_delete_retention_ms": ("DEBTOR_SEGMENTS_CHANGELOG_DELETE_RETENTION_MS", "86400000", 86_400_000),
    "dead_letter_retention_ms": ("DEBTOR_SEGMENTS_DEAD_LETTER_RETENTION_MS", "1209600000", 1_209_600_000),
    "change_retention_ms": ("DEBTOR_SEGMENTS_CHANGE_RETENTION_MS", "604800000", 604_800_000),
    "decision_retention_ms": ("DEBTOR_SEGMENTS_DECISION_RETENTION_MS", "94608000000", 94_608_000_000),
    "outbound_segment_ms": ("DEBTOR_SEGMENTS_OUTBOUND_SEGMENT_MS", "86400000", 86_400_000),
    "store_maintenance_s": ("DEBTOR_SEGMENTS_STORE_MAINTENANCE_S", "30", 30.0),
    "dead_letter_raw_max_bytes": ("DEBTOR_SEGMENTS_DEAD_LETTER_RAW_MAX_BYTES", "65536", 65536),
}

SECRETS = {"peer_secret", "kafka_password", "api_tokens", "id_secret", "signing_secret"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for declared in declarations():
        monkeypatch.delenv(declared.env, raising=False)
    return monkeypatch


def test_every_field_is_declared_once_with_variable_default_and_help() -> None:
    declared = declarations()
    assert [d.name for d in declared] == [f.name for f in dataclasses.fields(Settings)]
    assert {d.name: (d.env, d.default) for d in declared} == {name: (env, text) for name, (env, text, _) in CONTRACT.items()}
    for d in declared:
        assert d.env == ENV_PREFIX + d.name.upper(), d
        assert d.help.strip(), d


def test_defaults_are_todays(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert {name: getattr(settings, name) for name in CONTRACT} == {name: value for name, (_, _, value) in CONTRACT.items()}


def test_each_variable_is_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DEBTOR_SEGMENTS_WEB_PORT", "7077")
    clean_env.setenv("DEBTOR_SEGMENTS_LATENESS_DAYS", "2.5")
    clean_env.setenv("DEBTOR_SEGMENTS_DATA_DIR", "/var/lib/ds")
    clean_env.setenv("DEBTOR_SEGMENTS_DEBUG_IDS", "yes")
    clean_env.setenv("DEBTOR_SEGMENTS_LEAVE_GROUP_ON_STOP", "0")
    settings = Settings()
    assert (settings.web_port, settings.lateness_days, settings.data_dir) == (7077, 2.5, Path("/var/lib/ds"))
    assert (settings.debug_ids, settings.leave_group_on_stop) == (True, False)


def test_secrets_stay_out_of_the_repr(clean_env: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        clean_env.setenv(CONTRACT[name][0], f"s3cret-{name}")
    text = repr(Settings())
    assert "s3cret" not in text
    assert {f.name for f in dataclasses.fields(Settings) if not f.repr} == SECRETS


def test_overrides_replace_only_what_is_given() -> None:
    settings = Settings(partitions=4, topic_prefix="a-")
    assert with_overrides(settings, partitions=None, topic_prefix="b-") == dataclasses.replace(settings, topic_prefix="b-")


def test_engine_config_takes_the_engine_settings() -> None:
    config = Settings(lateness_days=3.0, id_secret="k").engine_config()
    assert config.lateness_days == 3.0 and config.id_secret == Settings(id_secret="k").id_secret_key


def test_declaration_of_an_unknown_setting() -> None:
    with pytest.raises(KeyError):
        declaration("no_such_setting")


@pytest.mark.parametrize("command", ["worker", "publish", "tail"])
def test_broker_options_show_the_declared_variable_and_default(command: str) -> None:
    """The options of a setting come from its declaration: default None (the environment
    applies), help naming the variable and the default."""
    cli = main.commands[command]
    options = {param.name: param for param in cli.params if isinstance(param, click.Option)}
    unset = cli.make_context(command, ["in.jsonl"] if command == "publish" else []).params
    by_setting = {"session_timeout_s": "session_timeout_s", "heartbeat_interval_s": "heartbeat_interval_s", "policy_path": "policy", "model_path": "initial_model"}
    checked = 0
    for name, option in options.items():
        setting_name = by_setting.get(name, name)
        if setting_name not in CONTRACT:
            continue
        env, text, _ = CONTRACT[setting_name]
        assert unset[name] is None, name
        assert option.help is not None and f"[env {env}" in option.help, (name, option.help)
        assert (f"default {text}]" in option.help) == bool(text), (name, option.help)
        if declaration(setting_name).choices:
            assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == declaration(setting_name).choices
        checked += 1
    assert checked >= 2
