"""docker-compose.yml cannot run here; this keeps it in step with the code's settings."""

from __future__ import annotations

import importlib
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
    assert importlib.import_module(processor[processor.index("-A") + 1]).app is not None


def test_server_ports_match_the_default_settings() -> None:
    services = compose()["services"]
    defaults = Settings()
    assert f"{defaults.kafka_port}:9092" in services["kafka"]["ports"]
    assert f"{defaults.mongo_port}:27017" in services["mongodb"]["ports"]
    assert f"{defaults.redis_port}:6379" in services["redis"]["ports"]
    env = services["processor"]["environment"]
    assert env["EVENTFOLD_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_stack_script_uses_the_same_variable_names() -> None:
    script = (ROOT / "stack" / "stack.sh").read_text()
    for field in ("kafka_port", "mongo_port", "redis_port", "producer_port", "query_port"):
        assert f"EVENTFOLD_{field.upper()}" in script
