"""The Faust worker's ``broker_credentials``, from the engine's Kafka security settings (services/kafka_security.py).

Faust hands its credentials to aiokafka (``faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth``) for
the worker's consumer and producer, also the ones its custom transport builds (streams/fetch_wait.py calls the
driver's own constructors); they are made here from :meth:`KafkaSecurity.aiokafka_kwargs`, so the worker and
the engine's other aiokafka client (the traffic recorder) reach the cluster the same way.
"""

from __future__ import annotations

import faust
from faust.types.auth import CredentialsT

from services.kafka_security import KafkaSecurity


def broker_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """None for PLAINTEXT; SSL: an SSLCredentials; SASL_*: a SASLCredentials (SASL_SSL when it has a TLS context)."""
    if security.protocol == "PLAINTEXT":
        return None
    auth = security.aiokafka_kwargs()
    if security.protocol == "SSL":
        return faust.SSLCredentials(auth["ssl_context"])
    return faust.SASLCredentials(
        username=auth["sasl_plain_username"],
        password=auth["sasl_plain_password"],
        mechanism=auth["sasl_mechanism"],
        ssl_context=auth.get("ssl_context"),  # None for SASL_PLAINTEXT, which SASLCredentials then uses
    )
