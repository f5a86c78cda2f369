"""Settings from the environment (prefix ``EVENTFOLD_``), shared by every process.

The same variable names are used by ``stack/stack.sh`` and ``docker-compose.yml``;
a test checks that they agree.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the servers are, and the names this deployment uses on them."""

    model_config = SettingsConfigDict(env_prefix="EVENTFOLD_", frozen=True)

    kafka_host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; overrides kafka_host/kafka_port"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="SASL_SSL for a cluster with SCRAM users over TLS"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = Field(
        default=None,
        description="PEM of the CA the brokers' certificates are checked against "
        "(the system's CAs when not set)",
    )
    mongo_host: str = "127.0.0.1"
    mongo_port: int = 27017
    mongo_url: str | None = Field(default=None, description="overrides mongo_host/mongo_port")
    mongo_db: str = "eventfold"
    mongo_write_concern: str = Field(
        default="majority",
        pattern=r"^(majority|[0-9]+)$",
        description="w of every read-model write: majority, or a number of members",
    )
    mongo_journal: bool = Field(
        default=True, description="read-model writes acknowledged once in the journal"
    )
    redis_appendfsync: Literal["always", "everysec", "no"] = Field(
        default="everysec",
        description="the local stack's Redis fsync policy (compose's too): everysec can lose "
        "the last second of writes on a host crash, always none",
    )
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_url: str | None = Field(default=None, description="overrides redis_host/redis_port")
    redis_max_connections: int = Field(
        default=64,
        ge=2,
        description="connections one process opens to Redis at most; a command that finds "
        "them all busy waits for one (up to redis_pool_wait_s), it never opens more",
    )
    redis_pool_wait_s: float = Field(
        default=10.0, gt=0, description="how long a command waits for a pooled Redis connection"
    )
    redis_client_name: str = Field(
        default="eventfold", description="the name Redis's CLIENT LIST shows for our connections"
    )

    producer_host: str = "127.0.0.1"
    producer_port: int = 8001
    query_host: str = "127.0.0.1"
    query_port: int = 8002
    processor_data_dir: str = Field(
        default=".stack/processor-data", description="the processor's local state (tables)"
    )
    rebuild_data_dir: str = Field(
        default=".stack/rebuild-data",
        description="a rebuild's join state on disk, removed when the rebuild ends",
    )

    topic_prefix: str = Field(default="", description="prefix of every topic (tests isolate by it)")
    redis_prefix: str = Field(default="ef:", description="prefix of every Redis key")
    consumer_group: str = Field(
        default="eventfold-processors",
        description="the processors' consumer group; also names their tables' changelog topics",
    )

    api_keys: dict[str, list[str]] = Field(
        default_factory=dict, description='JSON {"<key>": ["write", "read"]}'
    )
    auth_disabled: bool = Field(default=False, description="only for local use")
    cors_origins: list[str] = Field(
        default_factory=list,
        description='JSON ["https://app.example"]: origins whose pages may publish events '
        "(others are refused)",
    )

    kafka_timeout_s: float = 10.0
    publish_attempts: int = Field(default=3, ge=1, description="tries per publish (backoff)")
    max_body_bytes: int = Field(default=1_048_576, description="producer API request limit")
    consistency_timeout_s: float = Field(
        default=5.0, description="how long a query carrying a consistency token may wait"
    )
    max_batch_events: int = Field(
        default=1000, ge=1, description="events one POST /v1/events may carry (422 beyond)"
    )
    max_streams: int = Field(
        default=500, ge=1, description="live (SSE) streams a query API instance holds open"
    )
    max_consistency_waits: int = Field(
        default=500,
        ge=1,
        description="requests a query API instance keeps waiting on consistency tokens",
    )
    batch_max_records: int = Field(
        default=2000,
        ge=1,
        description="records a processor folds per batch at most: 5,000 caught up faster "
        "(2,429 and 3,041 events/s against 1,880 and 2,129 in alternated runs) but held "
        "448 to 543 MB with state for 200,000 orders, against 341 MB at 2,000",
    )
    batch_max_wait_ms: int = Field(
        default=20,
        ge=1,
        description="how long a processor's poll waits for records when none are there "
        "(a poll returns what was fetched at once: the batch is what arrived meanwhile)",
    )
    processor_compression: Literal["none", "lz4", "zstd", "gzip", "snappy"] = Field(
        default="lz4",
        description="compression of what the processors write to Kafka (table changelogs, "
        "the join's internal topics): an order's state is rewritten whole on each change, "
        "so its changelog was 2.5 times the size of the source topics",
    )
    processor_allocator: Literal["jemalloc", "system"] = Field(
        default="jemalloc",
        description="the processor's malloc: jemalloc returns the pages its batches "
        "leave free, glibc's malloc held them (stream_processors.worker)",
    )
    console_history: bool = Field(
        default=True,
        description="the query API samples lag, event rates and HTTP latency for the "
        "console's charts from its start (every 5 s, the last hour kept); false: from the "
        "first console request on",
    )
    targets_ttl_s: float = Field(
        default=0.5,
        gt=0,
        description="how long a processor trusts the read-model versions it writes to "
        "before reading them again (a rebuild waits twice this for every processor to "
        "write its new version too)",
    )
    projections_disabled: str = Field(
        default="",
        description="registered projections (projections.registry) not to run, "
        "comma-separated: e.g. sku_sales,payment_methods",
    )
    topic_partitions: int = 6
    topic_replication_factor: int = Field(default=1, description="3 on a production cluster")

    @cached_property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def mongo_write_concern_w(self) -> int | str:
        w = self.mongo_write_concern
        return int(w) if w.isdigit() else w

    def kafka_client(self) -> dict[str, Any]:
        """The connection arguments of every Kafka client (aiokafka's names): where the
        brokers are and, when the cluster asks for them, TLS and SASL credentials.
        (MongoDB and Redis take theirs in their URLs: ``mongodb://user:pw@host/?tls=true``,
        ``rediss://user:pw@host:port/0``.)"""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = create_ssl_context(cafile=self.kafka_ssl_cafile)
        if self.kafka_security_protocol.startswith("SASL"):
            password = self.kafka_sasl_password
            options.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=None if password is None else password.get_secret_value(),
            )
        return options

    @cached_property
    def mongo_uri(self) -> str:
        return self.mongo_url or f"mongodb://{self.mongo_host}:{self.mongo_port}"

    @cached_property
    def redis_uri(self) -> str:
        return self.redis_url or f"redis://{self.redis_host}:{self.redis_port}/0"

    def disabled_projections(self) -> frozenset[str]:
        return frozenset(n.strip() for n in self.projections_disabled.split(",") if n.strip())

    @property
    def processor_app_id(self) -> str:
        """The Faust app id: consumer group and prefix of the changelog topics."""
        return f"{self.topic_prefix}{self.consumer_group}"

    def topic(self, name: str) -> str:
        """The physical topic name of a logical one (``orders`` -> ``<prefix>orders``)."""
        return f"{self.topic_prefix}{name}"

    def logical_topic(self, physical: str) -> str:
        """Inverse of :meth:`topic`."""
        if self.topic_prefix and physical.startswith(self.topic_prefix):
            return physical[len(self.topic_prefix) :]
        return physical
