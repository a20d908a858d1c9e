"""How the engine's Kafka clients reach a secured cluster: TLS and SASL settings in each client library's form.

A production cluster (Strimzi on Kubernetes) listens with TLS and authenticates SCRAM-SHA-512 users: the
KafkaUser's Secret holds its ``password``, the Secret ``<cluster>-cluster-ca-cert`` (key ``ca.crt``) the CA
that signed the brokers' certificates. :class:`KafkaSecurity` holds those settings (``QU_KAFKA_SECURITY_PROTOCOL``,
``QU_KAFKA_SASL_*``, ``QU_KAFKA_SSL_CA_FILE``) and renders them for each client the engine uses:

- confluent-kafka (librdkafka): :meth:`KafkaSecurity.confluent_config`, merged by ``services/kafka_clients.py``;
- aiokafka: :meth:`KafkaSecurity.aiokafka_kwargs` (the traffic recorder);
- Faust: ``streams/kafka_auth.py`` builds its ``broker_credentials`` from the same aiokafka values (``services``
  does not import Faust).

Every client that talks to the configured cluster is built through one of these; the embedded stack's tansu
broker speaks PLAINTEXT only, and code that only ever talks to it (``services/stack``, ``services/bench``, ``qu
demo``) uses :data:`PLAINTEXT`. tests/unit/test_kafka_security.py keeps every client call site honest.

The password is a ``SecretStr`` until a client is configured; nothing here logs it (:meth:`describe` is the form
for logs).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import SecretStr

from services.errors import QuError

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]

TLS_PROTOCOLS: frozenset[str] = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS: frozenset[str] = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class KafkaSettings(Protocol):
    """The fields of ``services.settings.Settings`` read here (that module imports this one, not the reverse)."""

    @property
    def kafka_security_protocol(self) -> KafkaSecurityProtocol: ...
    @property
    def kafka_sasl_mechanism(self) -> KafkaSaslMechanism: ...
    @property
    def kafka_sasl_username(self) -> str | None: ...
    @property
    def kafka_sasl_password(self) -> SecretStr | None: ...
    @property
    def kafka_ssl_ca_file(self) -> Path | None: ...


class KafkaSecurityError(QuError):
    """The Kafka security settings cannot work; the message names the QU_ variables to set."""


def coherence_problem(
    protocol: str, username: str | None, password: SecretStr | None, ca_file: Path | None
) -> str | None:
    """What is wrong with these settings taken together (None: nothing); Settings' validator raises it.

    SASL protocols need a username and a password; credentials or a CA file that the protocol would silently
    ignore are a mistake too (a forgotten SASL_SSL would otherwise connect without them)."""
    has_password = password is not None and bool(password.get_secret_value())
    if protocol in SASL_PROTOCOLS:
        missing = [
            name
            for name, given in (("QU_KAFKA_SASL_USERNAME", bool(username)), ("QU_KAFKA_SASL_PASSWORD", has_password))
            if not given
        ]
        if missing:
            return (
                f"QU_KAFKA_SECURITY_PROTOCOL={protocol} needs SASL credentials: set {' and '.join(missing)} "
                "(a Strimzi KafkaUser's name and the `password` key of its Secret)"
            )
    elif username or has_password:
        return (
            f"QU_KAFKA_SASL_USERNAME / QU_KAFKA_SASL_PASSWORD are set but QU_KAFKA_SECURITY_PROTOCOL={protocol} "
            "sends no SASL credentials: set QU_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT), or unset them"
        )
    if ca_file is not None and protocol not in TLS_PROTOCOLS:
        return (
            f"QU_KAFKA_SSL_CA_FILE is set but QU_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: "
            "set QU_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, or unset QU_KAFKA_SSL_CA_FILE"
        )
    return None


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How to reach the cluster: the protocol, SASL login and the CA bundle (None: the system's CAs).

    Built with :meth:`from_settings` where clients are built; raises :class:`KafkaSecurityError` when the
    settings are incoherent or the CA file is not there (checked here, not in Settings: only processes that
    reach Kafka mount the CA, and a ``qu`` command that never connects should not fail for its absence)."""

    protocol: KafkaSecurityProtocol = "PLAINTEXT"
    sasl_mechanism: KafkaSaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        problem = coherence_problem(self.protocol, self.username, self.password, self.ca_file)
        if problem is not None:
            raise KafkaSecurityError(problem)
        if self.ca_file is not None and not self.ca_file.is_file():
            raise KafkaSecurityError(
                f"QU_KAFKA_SSL_CA_FILE={self.ca_file} is not a file: mount the cluster CA there (Strimzi: the "
                "`ca.crt` key of the Secret <cluster>-cluster-ca-cert), or unset it to use the system's CAs"
            )

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> KafkaSecurity:
        return cls(
            protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            ca_file=settings.kafka_ssl_ca_file,
        )

    @property
    def uses_tls(self) -> bool:
        return self.protocol in TLS_PROTOCOLS

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in SASL_PROTOCOLS

    def _login(self) -> tuple[str, str]:
        # __post_init__ made sure both are there whenever the protocol is a SASL one.
        assert self.username is not None and self.password is not None
        return self.username, self.password.get_secret_value()

    def confluent_config(self) -> dict[str, str]:
        """librdkafka's keys (confluent-kafka ``Producer`` / ``Consumer`` config). Unset ``ssl.ca.location``
        means the system's CAs; librdkafka verifies the broker's hostname by default, as aiokafka does."""
        config: dict[str, str] = {"security.protocol": self.protocol}
        if self.uses_sasl:
            username, password = self._login()
            config.update(
                {"sasl.mechanisms": self.sasl_mechanism, "sasl.username": username, "sasl.password": password}
            )
        if self.uses_tls and self.ca_file is not None:
            config["ssl.ca.location"] = str(self.ca_file)
        return config

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context trusting ``ca_file`` (or the system's CAs), checking hostnames; None without TLS."""
        if not self.uses_tls:
            return None
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(cafile=self.ca_file)
        return context

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaConsumer`` / ``AIOKafkaProducer`` (aiokafka needs an ``ssl_context``
        for every TLS protocol, so one is always made there)."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_sasl:
            username, password = self._login()
            kwargs.update(
                {
                    "sasl_mechanism": self.sasl_mechanism,
                    "sasl_plain_username": username,
                    "sasl_plain_password": password,
                }
            )
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        return kwargs

    def describe(self) -> str:
        """For logs and error messages: never the password."""
        parts: list[str] = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} as {self.username!r}")
        if self.uses_tls:
            parts.append(f"CA {self.ca_file}" if self.ca_file is not None else "system CAs")
        return ", ".join(parts)


PLAINTEXT = KafkaSecurity()
"""No TLS, no SASL: the embedded stack's tansu broker, and the default."""
