"""Kafka TLS / SASL settings: their validation, their form for each client library, and every client built with them."""

from __future__ import annotations

import ast
import asyncio
import ssl
from pathlib import Path

import certifi
import pytest
from pydantic import SecretStr, ValidationError

from services import kafka_clients
from services.kafka_security import PLAINTEXT, KafkaSecurity, KafkaSecurityError
from services.settings import Settings
from services.stack.embedded import EmbeddedStack

ROOT = Path(__file__).resolve().parents[2]
CA = Path(certifi.where())  # any PEM bundle that exists: the CA file is only loaded here, never used to connect
SECRET = "s3cr3t-pa55"


def scram(protocol: str = "SASL_SSL", ca_file: Path | None = CA) -> KafkaSecurity:
    return KafkaSecurity(
        protocol=protocol,  # type: ignore[arg-type]
        username="qu-engine",
        password=SecretStr(SECRET),
        ca_file=ca_file if protocol in {"SSL", "SASL_SSL"} else None,
    )


# --- settings ----------------------------------------------------------------------------------


def test_the_default_is_plaintext(clean_env: None) -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert KafkaSecurity.from_settings(settings) == PLAINTEXT


def test_a_strimzi_scram_user_over_tls_from_the_environment(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QU_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("QU_KAFKA_SASL_USERNAME", "qu-engine")
    monkeypatch.setenv("QU_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("QU_KAFKA_SSL_CA_FILE", str(CA))
    security = KafkaSecurity.from_settings(Settings())
    assert security == scram()
    assert security.sasl_mechanism == "SCRAM-SHA-512"


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({}, ["QU_KAFKA_SASL_USERNAME and QU_KAFKA_SASL_PASSWORD"]),
        ({"kafka_sasl_username": "qu-engine"}, ["set QU_KAFKA_SASL_PASSWORD"]),
        ({"kafka_sasl_password": SECRET}, ["set QU_KAFKA_SASL_USERNAME"]),
        ({"kafka_sasl_username": "qu-engine", "kafka_sasl_password": ""}, ["set QU_KAFKA_SASL_PASSWORD"]),
    ],
)
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_without_credentials_names_the_variables_to_set(
    clean_env: None, protocol: str, given: dict[str, str], named: list[str]
) -> None:
    # The settings build: a process that never reaches Kafka (the catalog import in a pod that shares the
    # ConfigMap with the Kafka clients) must start; a Kafka client cannot be built from them.
    settings = Settings(kafka_security_protocol=protocol, **given)  # type: ignore[arg-type]
    with pytest.raises(KafkaSecurityError) as caught:
        KafkaSecurity.from_settings(settings)
    message = str(caught.value)
    assert f"QU_KAFKA_SECURITY_PROTOCOL={protocol} needs SASL credentials" in message
    for name in named:
        assert name in message
    assert SECRET not in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_credentials_the_protocol_would_ignore_are_an_error_that_does_not_show_them(
    clean_env: None, protocol: str
) -> None:
    settings = Settings(kafka_security_protocol=protocol, kafka_sasl_username="qu-engine", kafka_sasl_password=SECRET)  # type: ignore[arg-type]
    with pytest.raises(KafkaSecurityError) as caught:
        KafkaSecurity.from_settings(settings)
    message = str(caught.value)
    assert "QU_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in message
    assert SECRET not in message


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_a_ca_file_without_tls_is_an_error(clean_env: None, protocol: str) -> None:
    logins = {"kafka_sasl_username": "u", "kafka_sasl_password": "p"} if protocol == "SASL_PLAINTEXT" else {}
    settings = Settings(kafka_security_protocol=protocol, kafka_ssl_ca_file=CA, **logins)  # type: ignore[arg-type]
    with pytest.raises(KafkaSecurityError, match="QU_KAFKA_SSL_CA_FILE is set"):
        KafkaSecurity.from_settings(settings)


def test_a_settings_error_never_shows_the_secret_it_was_given(clean_env: None) -> None:
    # pydantic prints a field's input in its errors unless told not to (hide_input_in_errors).
    with pytest.raises(ValidationError) as caught:
        Settings(kafka_sasl_password=SECRET, redis_port=f"not-a-port-{SECRET}")  # type: ignore[arg-type]
    assert SECRET not in str(caught.value)


def test_a_missing_ca_file_is_named_where_the_clients_are_built(clean_env: None, tmp_path: Path) -> None:
    missing = tmp_path / "ca.crt"
    # Settings build (a `qu` command that never connects does not need the mount) ...
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=missing)
    # ... the clients do not.
    with pytest.raises(KafkaSecurityError, match=f"QU_KAFKA_SSL_CA_FILE={missing} is not a file"):
        KafkaSecurity.from_settings(settings)


def test_the_password_is_in_no_representation() -> None:
    security = scram()
    assert SECRET not in repr(security)
    assert SECRET not in str(security)
    assert security.describe() == f"SASL_SSL, SCRAM-SHA-512 as 'qu-engine', CA {CA}"
    assert KafkaSecurity(protocol="SSL").describe() == "SSL, system CAs"


# --- confluent-kafka ---------------------------------------------------------------------------


def test_confluent_config_for_each_protocol() -> None:
    assert PLAINTEXT.confluent_config() == {"security.protocol": "PLAINTEXT"}
    assert KafkaSecurity(protocol="SSL", ca_file=CA).confluent_config() == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(CA),
    }
    assert KafkaSecurity(protocol="SSL").confluent_config() == {"security.protocol": "SSL"}  # the system's CAs
    assert scram().confluent_config() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "qu-engine",
        "sasl.password": SECRET,
        "ssl.ca.location": str(CA),
    }
    assert scram("SASL_PLAINTEXT").confluent_config() == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "qu-engine",
        "sasl.password": SECRET,
    }


def test_librdkafka_takes_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real constructors accept it (librdkafka refuses unknown keys and mechanisms it was not built with)."""
    seen: list[dict[str, object]] = []
    real_producer, real_consumer = kafka_clients.Producer, kafka_clients.Consumer

    def recording(cls: type) -> object:
        def build(config: dict[str, object]) -> object:
            seen.append(dict(config))
            return cls(config)

        return build

    monkeypatch.setattr(kafka_clients, "Producer", recording(real_producer))
    monkeypatch.setattr(kafka_clients, "Consumer", recording(real_consumer))
    for security in (scram(), scram("SASL_PLAINTEXT"), KafkaSecurity(protocol="SSL", ca_file=CA)):
        kafka_clients.producer("127.0.0.1:1", security=security)
        kafka_clients.consumer("127.0.0.1:1", "g", security=security).close()
    assert [c["security.protocol"] for c in seen] == ["SASL_SSL"] * 2 + ["SASL_PLAINTEXT"] * 2 + ["SSL"] * 2
    assert seen[0]["sasl.password"] == SECRET and seen[0]["bootstrap.servers"] == "127.0.0.1:1"


def test_the_refresher_and_the_lag_reader_consume_with_it() -> None:
    from services.cache.refresher import HeadTagRefresher
    from services.consumer_lag import GroupLagReader

    configs: list[dict[str, object]] = []

    class Fake:
        def __init__(self, config: dict[str, object]) -> None:
            configs.append(config)

    refresher = HeadTagRefresher(
        {"bootstrap.servers": "b:9093", "group.id": "g"},
        None,  # type: ignore[arg-type]  # not reached: the consumer is built on the first poll
        admission=None,  # type: ignore[arg-type]
        writer=object(),  # type: ignore[arg-type]
        consumer_factory=Fake,  # type: ignore[arg-type]
        security=scram(),
    )
    assert refresher._config["sasl.username"] == "qu-engine"
    assert refresher._config["security.protocol"] == "SASL_SSL"
    lag = GroupLagReader("127.0.0.1:1", "g", "t", security=scram())
    try:
        assert lag._consumer is not None
    finally:
        lag.close()


# --- aiokafka and Faust --------------------------------------------------------------------------


def test_aiokafka_kwargs_for_each_protocol() -> None:
    assert PLAINTEXT.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    kwargs = scram().aiokafka_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "qu-engine",
        "sasl_plain_password": SECRET,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert "ssl_context" not in scram("SASL_PLAINTEXT").aiokafka_kwargs()
    # SSL with the system's CAs still needs a context: aiokafka refuses SSL without one.
    assert isinstance(KafkaSecurity(protocol="SSL").aiokafka_kwargs()["ssl_context"], ssl.SSLContext)


def test_the_recorder_consumes_with_it() -> None:
    from aiokafka import AIOKafkaConsumer

    from services.replay.recorder import TrafficRecorder

    built: list[AIOKafkaConsumer] = []

    def factory(**kwargs: object) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(**kwargs)  # type: ignore[arg-type]
        built.append(consumer)
        raise _Stop

    async def start() -> None:
        with pytest.raises(_Stop):
            await TrafficRecorder("127.0.0.1:1", Path("unused"), consumer_factory=factory, security=scram()).start()

    asyncio.run(start())
    client = built[0]._client
    assert (client._security_protocol, client._sasl_mechanism, client._sasl_plain_username) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "qu-engine",
    )
    assert isinstance(client._ssl_context, ssl.SSLContext)


class _Stop(Exception):
    pass


def test_faust_credentials_reach_aiokafka_as_the_module_says() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams.kafka_auth import broker_credentials

    assert broker_credentials(PLAINTEXT) is None
    for security in (scram(), scram("SASL_PLAINTEXT"), KafkaSecurity(protocol="SSL", ca_file=CA)):
        expected = security.aiokafka_kwargs()
        given = dict(credentials_to_aiokafka_auth(broker_credentials(security)))
        assert {k: v for k, v in given.items() if k != "ssl_context"} == {
            k: v for k, v in expected.items() if k != "ssl_context"
        }
        assert isinstance(given.get("ssl_context"), ssl.SSLContext) == security.uses_tls
    assert SECRET not in repr(broker_credentials(scram()))


def test_the_workers_own_transport_builds_its_consumer_and_producer_with_them() -> None:
    """streams/fetch_wait.py's transport: the worker's consumer and producer carry the credentials."""
    import faust

    from streams import fetch_wait
    from streams.kafka_auth import broker_credentials

    async def build() -> tuple[object, dict[str, object]]:
        app = faust.App("qu-test", broker="kafka://127.0.0.1:1", broker_credentials=broker_credentials(scram()))
        app.transport = fetch_wait.Transport(app.conf.broker_consumer, app)
        thread = app.consumer._new_consumer_thread()  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        producer_auth = dict(app.producer._settings_auth())  # type: ignore[attr-defined]
        return consumer, producer_auth

    consumer, producer_auth = asyncio.run(build())
    client = consumer._client  # type: ignore[attr-defined]
    assert consumer._fetch_max_wait_ms == fetch_wait.FETCH_MAX_WAIT_MS  # type: ignore[attr-defined]
    assert (client._security_protocol, client._sasl_mechanism, client._sasl_plain_username) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "qu-engine",
    )
    assert isinstance(client._ssl_context, ssl.SSLContext)
    assert producer_auth["security_protocol"] == "SASL_SSL" and producer_auth["sasl_plain_password"] == SECRET


# --- the embedded stack --------------------------------------------------------------------------


def test_the_embedded_stacks_children_speak_plaintext_to_tansu(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "QU_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "QU_KAFKA_SASL_USERNAME": "qu-engine",
        "QU_KAFKA_SASL_PASSWORD": SECRET,
        "QU_KAFKA_SSL_CA_FILE": str(CA),
    }.items():
        monkeypatch.setenv(name, value)
    env = EmbeddedStack(Settings(state_dir=tmp_path)).child_environment()
    assert env["QU_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert not {"QU_KAFKA_SASL_USERNAME", "QU_KAFKA_SASL_PASSWORD", "QU_KAFKA_SSL_CA_FILE"} & env.keys()


# --- every client goes through the module --------------------------------------------------------

# Library constructors of Kafka clients (confluent-kafka, aiokafka, kafka-python, Faust).
CONSTRUCTORS = {
    "Producer",
    "Consumer",
    "AdminClient",
    "SerializingProducer",
    "DeserializingConsumer",
    "AIOKafkaProducer",
    "AIOKafkaConsumer",
    "AIOKafkaClient",
    "AIOKafkaAdminClient",
    "KafkaProducer",
    "KafkaConsumer",
    "KafkaAdminClient",
    "App",
}
# The only places in services/ and streams/ (outside the embedded stack and the bench) that call one, and
# how each gets the security settings: the confluent factory's config, the recorder's factory call, the
# refresher's config, the Faust app's broker_credentials (each checked by a test above).
ALLOWED_CONSTRUCTIONS = {
    ("services/kafka_clients.py", "producer", "Producer"),
    ("services/kafka_clients.py", "consumer", "Consumer"),
    ("services/replay/recorder.py", "TrafficRecorder.start", "_consumer_factory"),
    ("services/cache/refresher.py", "HeadTagRefresher._consume", "_consumer_factory"),
    ("streams/app.py", "<module>", "App"),
}
# Helpers that build a client: every call of one must say how it reaches the cluster (security=...).
WRAPPERS = {
    "producer",
    "consumer",
    "read_to_end",
    "GroupLagReader",
    "TrafficRecorder",
    "snapshot_topics",
    "HeadTagRefresher",
    "produce_events",
}
# The embedded stack and the benchmarks only ever talk to their own tansu broker (PLAINTEXT); so does the bench's
# Faust floor, started by services/bench/faust_floor.py.
EMBEDDED_ONLY = ("services/stack/", "services/bench/", "streams/faust_floor.py")


def _sources() -> list[tuple[str, ast.Module]]:
    files = sorted([*(ROOT / "services").rglob("*.py"), *(ROOT / "streams").rglob("*.py")])
    out = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(EMBEDDED_ONLY):
            out.append((rel, ast.parse(path.read_text(encoding="utf-8"), rel)))
    return out


def _calls(tree: ast.Module) -> list[tuple[str, str, ast.Call]]:
    """(enclosing Class.function or <module>, called name, call) for every call in ``tree``."""
    found: list[tuple[str, str, ast.Call]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Call):
                func = child.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                found.append((".".join(scope) or "<module>", name, child))
            visit(child, scope)

    visit(tree, [])
    return found


def test_every_kafka_client_is_built_through_the_security_settings() -> None:
    constructions = set()
    unsecured = []
    for rel, tree in _sources():
        for scope, name, call in _calls(tree):
            if name in CONSTRUCTORS or name.endswith(("consumer_factory", "producer_factory")):
                constructions.add((rel, scope, name))
            if name in WRAPPERS and not any(k.arg == "security" for k in call.keywords):
                unsecured.append(f"{rel}:{call.lineno} {name}(...) in {scope}")
    assert constructions == ALLOWED_CONSTRUCTIONS, "a new Kafka client: build it through services/kafka_security.py"
    assert unsecured == [], "say how these reach the cluster: security=KafkaSecurity.from_settings(settings)"
    # The allowed constructions do take it:
    sources = dict(_sources())
    app_call = next(c for s, n, c in _calls(sources["streams/app.py"]) if n == "App")
    assert "broker_credentials" in {k.arg for k in app_call.keywords}
    recorder_call = next(c for s, n, c in _calls(sources["services/replay/recorder.py"]) if n == "_consumer_factory")
    assert any(k.arg is None and "aiokafka_kwargs" in ast.unparse(k.value) for k in recorder_call.keywords)
