"""docker-compose.yml cannot run here; this keeps it in step with the code's settings."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from eventfold.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_of_the_stack_is_there_with_a_healthcheck() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "mongodb", "redis", "processor", "producer-api", "query-api"}
    for name in ("kafka", "mongodb", "redis", "producer-api", "query-api"):
        assert "healthcheck" in services[name], name


def test_environment_variables_are_settings_the_code_reads() -> None:
    fields = set(Settings.model_fields)
    for name, service in compose()["services"].items():
        for var in service.get("environment") or {}:
            if var.startswith("EVENTFOLD_"):
                assert var.removeprefix("EVENTFOLD_").lower() in fields, (name, var)


def test_api_ports_and_entry_points_match_the_code() -> None:
    services = compose()["services"]
    defaults = Settings()
    for name, port in (
        ("producer-api", defaults.producer_port),
        ("query-api", defaults.query_port),
    ):
        command = services[name]["command"]
        assert command[command.index("--port") + 1] == str(port)
        assert services[name]["ports"] == [f"{port}:{port}"]
        module, factory = command[command.index("--factory") + 1].split(":")
        assert callable(getattr(importlib.import_module(module), factory))
    processor = services["processor"]["command"]
    assert callable(importlib.import_module(processor[processor.index("-m") + 1]).main)


def test_server_ports_match_the_default_settings() -> None:
    """The stores are published (on loopback) only by the development override."""
    dev = yaml.safe_load((ROOT / "docker-compose.dev.yml").read_text())["services"]
    defaults = Settings()
    assert f"127.0.0.1:{defaults.kafka_port}:29092" in dev["kafka"]["ports"]
    assert f"127.0.0.1:{defaults.mongo_port}:27017" in dev["mongodb"]["ports"]
    assert f"127.0.0.1:{defaults.redis_port}:6379" in dev["redis"]["ports"]
    env = compose()["services"]["processor"]["environment"]
    assert env["EVENTFOLD_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_the_stores_are_on_the_compose_network_only_and_every_service_restarts() -> None:
    services = compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"producer-api", "query-api"}
    assert all(service.get("restart") == "unless-stopped" for service in services.values())


def test_the_apis_need_keys_and_the_stores_passwords_from_the_env_file() -> None:
    """``docker compose up`` refuses to start without them (``${VAR:?...}``), and
    ``.env.example`` names every one."""
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required == {"EVENTFOLD_API_KEYS", "MONGO_PASSWORD", "REDIS_PASSWORD"}
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(example) == required
    keys = json.loads(example["EVENTFOLD_API_KEYS"])
    assert sorted(scope for scopes in keys.values() for scope in scopes) == ["read", "write"]
    for name in ("processor", "producer-api", "query-api"):
        env = compose()["services"][name]["environment"]
        assert "EVENTFOLD_AUTH_DISABLED" not in env
        assert "MONGO_PASSWORD" in env["EVENTFOLD_MONGO_URL"]
        assert "REDIS_PASSWORD" in env["EVENTFOLD_REDIS_URL"]


def stack_script() -> str:
    return (ROOT / "stack" / "stack.sh").read_text()


def test_the_stack_script_defaults_are_the_settings_defaults() -> None:
    """``make run`` and a process started by hand with no variables set agree on every
    address: the script's fallbacks are the settings' defaults."""
    defaults = Settings()
    fallbacks = dict(re.findall(r'"\$\{EVENTFOLD_([A-Z_]+):-([^}]+)\}"', stack_script()))
    for var, field in (
        ("KAFKA_PORT", "kafka_port"),
        ("MONGO_PORT", "mongo_port"),
        ("REDIS_PORT", "redis_port"),
        ("PRODUCER_PORT", "producer_port"),
        ("QUERY_PORT", "query_port"),
        ("REDIS_APPENDFSYNC", "redis_appendfsync"),
    ):
        assert fallbacks[var] == str(getattr(defaults, field)), var


def test_variables_the_stack_script_gives_the_processes_are_settings() -> None:
    fields = set(Settings.model_fields)
    exported = set()
    for line in stack_script().splitlines():
        if line.lstrip().startswith(("export ", "EVENTFOLD_")) or " EVENTFOLD_" in line:
            exported |= set(re.findall(r"\b(EVENTFOLD_[A-Z_]+)=", line))
    # the stack's own variables: where it lives and what it starts, not settings
    own = {"EVENTFOLD_STACK_DIR", "EVENTFOLD_KAFKA_BROKERS"}
    assert {
        "EVENTFOLD_KAFKA_PORT",
        "EVENTFOLD_KAFKA_BOOTSTRAP",
        "EVENTFOLD_TOPIC_REPLICATION_FACTOR",
        "EVENTFOLD_PROCESSOR_DATA_DIR",
        "EVENTFOLD_AUTH_DISABLED",
    } <= exported
    for var in exported - own:
        assert var.removeprefix("EVENTFOLD_").lower() in fields, var
