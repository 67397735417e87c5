"""Settings: the TOML file `agent run --config` reads, the preferences, the keyring."""

from pathlib import Path

import pytest

import agent.cli
from agent.config import AgentConfig
from agent.desktop.settings import (
    AgentSettings,
    DesktopPrefs,
    SecretStore,
    SettingsError,
    load_agent_file,
    load_prefs,
    save_agent_file,
    save_prefs,
)
from tests.agent.desktop.conftest import need

SETTINGS = AgentSettings(
    proxy_url="https://relay.example:8443/base",
    backend_url="http://127.0.0.1:11434",
    worker_name='gpu "one"',
    models=("llama3:8b", "qwen2.5"),
    max_concurrency=3,
)


def _agent_run_reads(path: Path, monkeypatch: pytest.MonkeyPatch) -> AgentConfig:
    seen: list[AgentConfig] = []
    monkeypatch.setattr(agent.cli, "_serve", seen.append)
    monkeypatch.setenv("WORKER_SECRET", "from-env")
    for key in ("PROXY_URL", "BACKEND_URL", "MODELS", "WORKER_NAME", "MAX_CONCURRENCY"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        agent.cli.main(["run", "--config", str(path)])
    assert exit_info.value.code == 0
    (config,) = seen
    return config


def test_round_trip_and_agent_run_reads_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agent.toml"
    save_agent_file(path, SETTINGS)
    assert load_agent_file(path) == SETTINGS
    from_cli = _agent_run_reads(path, monkeypatch)
    assert from_cli == SETTINGS.agent_config("from-env")
    assert from_cli.models == ("llama3:8b", "qwen2.5")
    assert from_cli.worker_name == 'gpu "one"'


def test_every_model_is_written_as_star(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "agent.toml"
    save_agent_file(path, AgentSettings(proxy_url="http://relay:8080"))
    assert 'models = "*"' in path.read_text()
    assert _agent_run_reads(path, monkeypatch).discover_models


def test_a_hand_written_file_keeps_its_other_options(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        'proxy_url = "http://relay:8080"\n[agent]\nmodels = "a,b"\ndrain-timeout = 5.0\n'
        'worker-secret = "in-file"\n'
    )
    settings = load_agent_file(path)
    assert settings.models == ("a", "b")
    assert settings.other == {"drain_timeout": 5.0, "worker_secret": "in-file"}
    assert settings.file_secret == "in-file"
    assert settings.agent_config("s").drain_timeout == 5.0
    save_agent_file(path, settings)
    text = path.read_text()
    assert "drain-timeout = 5.0" in text
    assert "in-file" not in text  # the app never writes a secret


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ("[agent\n", "not valid TOML"),
        ('max-concurrency = "many"\n', "must be a number"),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_agent_file(path)


def test_prefs_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "desktop.toml"
    assert load_prefs(path) == DesktopPrefs()
    prefs = DesktopPrefs(start_on_login=True, notifications=False, update_url="http://x/json")
    save_prefs(path, prefs)
    assert load_prefs(path) == prefs
    path.write_text("[desktop]\nsurprise = 1\n")
    with pytest.raises(SettingsError, match="surprise"):
        load_prefs(path)


def test_the_secret_goes_to_the_keyring_only(tmp_path: Path, file_keyring: Path) -> None:
    need("keyring", "the OS keyring client")
    store = SecretStore()
    store.set("https://relay.example/", "s3cret-value")
    assert store.get("https://relay.example") == "s3cret-value"
    assert store.get("https://other.example") is None
    assert "s3cret-value" in file_keyring.read_text()
    path = tmp_path / "agent.toml"
    save_agent_file(path, SETTINGS)
    assert "s3cret-value" not in path.read_text()
