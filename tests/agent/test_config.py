"""AgentConfig: validation, normalisation and the relay URL."""

import pytest

from agent.config import AgentConfig, BackendDialect, LogFormat, relay_ws_url
from agent.errors import ConfigError


@pytest.mark.parametrize(
    ("proxy_url", "expected"),
    [
        ("http://relay:8080", "ws://relay:8080/v1/worker/connect?provider=local"),
        ("https://relay.example.com", "wss://relay.example.com/v1/worker/connect?provider=local"),
        ("ws://relay:8080/", "ws://relay:8080/v1/worker/connect?provider=local"),
        ("wss://relay//", "wss://relay/v1/worker/connect?provider=local"),
        ("HTTPS://relay/prefix/", "wss://relay/prefix/v1/worker/connect?provider=local"),
        ("http://relay/a/b///", "ws://relay/a/b/v1/worker/connect?provider=local"),
        ("http://[::1]:8080", "ws://[::1]:8080/v1/worker/connect?provider=local"),
        ("ws://relay/v1/worker/connect", "ws://relay/v1/worker/connect?provider=local"),
        ("http://relay/?x=1#frag", "ws://relay/v1/worker/connect?provider=local"),
    ],
)
def test_ws_url_derivation(proxy_url: str, expected: str) -> None:
    assert relay_ws_url(proxy_url, "local") == expected


def test_provider_is_query_encoded() -> None:
    assert relay_ws_url("http://r", "team a&b") == "ws://r/v1/worker/connect?provider=team+a%26b"


@pytest.mark.parametrize("bad", ["ftp://relay", "relay:8080", "http://", ""])
def test_bad_proxy_url_names_the_flag(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        AgentConfig.create(worker_secret="s", proxy_url=bad)
    assert info.value.option == "--proxy-url"


def test_defaults() -> None:
    config = AgentConfig.create(worker_secret="s", worker_name="box")
    assert config.ws_url == "ws://127.0.0.1:8080/v1/worker/connect?provider=local"
    assert config.backend_url == "http://127.0.0.1:8000"
    assert config.discover_models
    assert config.models == ()
    assert config.max_concurrency == 1
    assert config.models_poll_interval == 30
    assert config.drain_timeout == 30
    assert config.backend_dialect is BackendDialect.AUTO
    assert config.log_format is LogFormat.TEXT
    assert config.timeouts.relay_silence_secs == 90
    assert (config.backoff.initial_secs, config.backoff.max_secs) == (1, 30)
    assert (config.backoff.auth_initial_secs, config.backoff.auth_max_secs) == (10, 60)


def test_worker_name_defaults_to_host_name() -> None:
    import socket

    assert AgentConfig.create(worker_secret="s").worker_name == socket.gethostname()


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ("*", ()),
        ("", ()),
        (" * ", ()),
        ("a, b,,a ,c", ("a", "b", "c")),
        (["x", "y"], ("x", "y")),
    ],
)
def test_models(models: str | list[str], expected: tuple[str, ...]) -> None:
    assert AgentConfig.create(worker_secret="s", models=models).models == expected


def test_backend_url_is_normalised() -> None:
    config = AgentConfig.create(worker_secret="s", backend_url="HTTP://gpu:8000/prefix/")
    assert config.backend_url == "http://gpu:8000/prefix"


@pytest.mark.parametrize(
    ("values", "option"),
    [
        ({"worker_secret": None}, "--worker-secret"),
        ({"worker_secret": ""}, "--worker-secret"),
        ({"max_concurrency": 0}, "--max-concurrency"),
        ({"models_poll_interval": 0}, "--models-poll-interval"),
        ({"drain_timeout": -1}, "--drain-timeout"),
        ({"backend_dialect": "klingon"}, "--backend-dialect"),
        ({"log_format": "xml"}, "--log-format"),
        ({"log_level": "loud"}, "--log-level"),
        ({"models": "a,*"}, "--models"),
        ({"backend_url": "ws://x"}, "--backend-url"),
        ({"provider": " "}, "--provider"),
    ],
)
def test_invalid_values_name_their_flag(values: dict[str, object], option: str) -> None:
    arguments: dict[str, object] = {"worker_secret": "s", **values}
    with pytest.raises(ConfigError) as info:
        AgentConfig.create(**arguments)  # type: ignore[arg-type]
    assert info.value.option == option
    assert str(info.value).startswith(f"invalid value for {option}: ")


def test_secrets_stay_out_of_repr() -> None:
    config = AgentConfig.create(worker_secret="hunter2", backend_api_key="sk-top")
    assert "hunter2" not in repr(config)
    assert "sk-top" not in repr(config)


def test_credentials_in_urls_are_redacted_for_display() -> None:
    config = AgentConfig.create(
        worker_secret="s", proxy_url="https://u:pw@relay", backend_url="http://k:pw@gpu:8000"
    )
    assert config.ws_url == "wss://u:pw@relay/v1/worker/connect?provider=local"
    assert config.relay_display == "wss://relay/v1/worker/connect?provider=local"
    assert config.backend_display == "http://gpu:8000"
