"""The platform on a Kafka that asks for TLS and SCRAM credentials (issue 11): the
local stack's SASL_SSL listener (``stack/stack.sh``: a self-signed certificate, the
SCRAM-SHA-512 user ``eventfold``), reached only through the security settings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from eventfold.settings import Settings
from eventfold.topics import ensure_topics
from producers.demo import generate
from projections.read_models import Stores
from query_api.api import create_app as create_query_app
from tests.conftest import isolated_settings, settings_env
from tests.support.processes import ProcessorProcess
from tests.support.scenario import publish, wait_caught_up
from tests.support.stack import ROOT, TEST_STACK_ENV, StackPorts

TLS = ROOT / ".stack" / "test" / "kafka" / "tls" / "ca.pem"
SECURE = {
    "kafka_bootstrap": f"127.0.0.1:{TEST_STACK_ENV['EVENTFOLD_KAFKA_SASL_PORT']}",
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "eventfold",
    "kafka_sasl_password": "eventfold-local-secret",
    "kafka_ssl_cafile": str(TLS),
}


@pytest.fixture(scope="module")
def deployment(servers: StackPorts) -> Settings:
    return isolated_settings(servers, **SECURE)


def secure_env(settings: Settings) -> dict[str, str]:
    return {
        **settings_env(settings),
        **{f"EVENTFOLD_{k.upper()}": v for k, v in SECURE.items()},
    }


@pytest.fixture(scope="module")
async def secure_processor(
    deployment: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ProcessorProcess]:
    await ensure_topics(deployment)
    log = tmp_path_factory.mktemp("processor") / "processor.log"
    worker = ProcessorProcess(deployment, secure_env(deployment), log)
    worker.start()
    yield worker
    worker.stop()


async def test_the_read_side_runs_over_tls_with_scram_credentials(
    secure_processor: ProcessorProcess, deployment: Settings
) -> None:
    events = generate(47, 8)
    await publish(deployment, events)  # the producer client, over SASL_SSL
    await wait_caught_up(deployment)  # the processor, over SASL_SSL
    order_id = next(e["data"]["order_id"] for e in events if e["type"] == "OrderPlaced")
    app = create_query_app(deployment)  # its consistency waits read Kafka too
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://query"
    ) as api:
        response = await api.get(f"/v1/orders/{order_id}")
        assert response.status_code == 200, response.text
        assert response.json()["order_id"] == order_id
    await app.state.stores.close()
    stores = Stores(deployment)
    try:
        assert await (await stores.active()).orders.count_documents({}) > 0
    finally:
        await stores.close()


async def test_a_wrong_password_is_refused_by_the_broker(
    deployment: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = deployment.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    producer = AIOKafkaProducer(**{**wrong.kafka_client(), "request_timeout_ms": 5000})
    with pytest.raises(KafkaError):
        await producer.start()
    await producer.stop()
    assert "SaslAuthenticationFailed" in caplog.text  # the broker's answer, logged by aiokafka
