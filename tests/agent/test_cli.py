"""The `agent` command line: console scripts as subprocesses, precedence in process."""

import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli
from agent.config import AgentConfig

BIN = Path(sys.executable).parent


def run_script(
    name: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / name), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


def test_version() -> None:
    result = run_script("agent", "--version")
    assert result.returncode == 0
    assert result.stdout.startswith("agent ")
    worker = run_script("modelrelay-worker", "--version")
    assert worker.returncode == 0
    assert worker.stdout.startswith("modelrelay-worker ")


def test_bad_flag_value_is_one_line_and_exit_2() -> None:
    result = run_script("agent", "run", "--max-concurrency", "many", env={"WORKER_SECRET": "s"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("agent: error: ")
    assert "--max-concurrency" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_worker_alias_reports_errors_under_its_name() -> None:
    result = run_script("modelrelay-worker", "--max-concurrency", "x", env={"WORKER_SECRET": "s"})
    assert result.returncode == 2
    assert result.stderr.startswith("modelrelay-worker: error: ")


def test_completions_script() -> None:
    result = run_script("agent", "--completions", "bash")
    assert result.returncode == 0
    assert "_AGENT_COMPLETE=complete_bash" in result.stdout


def test_completion_requests_are_answered() -> None:
    result = run_script(
        "agent",
        env={
            "_AGENT_COMPLETE": "complete_bash",
            "COMP_WORDS": "agent run --max-con",
            "COMP_CWORD": "2",
        },
    )
    assert result.returncode == 0
    assert result.stdout.split() == ["--max-concurrency"]


# --- precedence, in process ------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[AgentConfig]:
    configs: list[AgentConfig] = []
    monkeypatch.setattr(cli, "_serve", configs.append)
    for name in (
        "PROXY_URL",
        "WORKER_SECRET",
        "BACKEND_URL",
        "BACKEND_API_KEY",
        "MODELS",
        "MODELS_POLL_SECS",
        "PROVIDER_NAME",
        "WORKER_NAME",
        "MAX_CONCURRENCY",
        "BACKEND_DIALECT",
        "DRAIN_TIMEOUT_SECS",
        "LOG_LEVEL",
        "RUST_LOG",
        "LOG_FORMAT",
    ):
        monkeypatch.delenv(name, raising=False)
    return configs


def invoke(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        cli.main(list(args))
    code = info.value.code
    return code if isinstance(code, int) else 1


def test_precedence_flag_env_file_default(
    captured: list[AgentConfig], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        'worker-secret = "from-file"\n'
        "max-concurrency = 3\n"
        'models = ["a", "b"]\n'
        "[agent]\n"
        "models_poll_interval = 7.5\n"
    )
    monkeypatch.setenv("MAX_CONCURRENCY", "5")
    assert invoke("run", "--config", str(config_file), "--max-concurrency", "7") == 0
    assert invoke("run", "--config", str(config_file)) == 0
    monkeypatch.delenv("MAX_CONCURRENCY")
    assert invoke("run", "--config", str(config_file)) == 0
    monkeypatch.setenv("WORKER_SECRET", "from-env")
    assert invoke("run") == 0
    flag, env, file, default = captured
    assert flag.max_concurrency == 7
    assert env.max_concurrency == 5
    assert file.max_concurrency == 3
    assert default.max_concurrency == 1
    assert file.models == ("a", "b")
    assert file.models_poll_interval == 7.5
    assert file.worker_secret == "from-file"
    assert default.worker_secret == "from-env"
    assert default.models == ()


def test_config_file_order_does_not_matter(captured: list[AgentConfig], tmp_path: Path) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text('worker_secret = "x"\nprovider = "gpu"\n')
    # The flag comes before --config on the command line and still wins.
    assert invoke("run", "--provider", "cli", "--config", str(config_file)) == 0
    assert captured[0].provider == "cli"


def test_env_values(captured: list[AgentConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_SECRET", "s")
    monkeypatch.setenv("PROXY_URL", "https://relay.example")
    monkeypatch.setenv("MODELS", "m1,m2")
    monkeypatch.setenv("BACKEND_DIALECT", "anthropic")
    monkeypatch.setenv("RUST_LOG", "agent=debug")
    assert invoke("run") == 0
    config = captured[0]
    assert config.ws_url == "wss://relay.example/v1/worker/connect?provider=local"
    assert config.models == ("m1", "m2")
    assert config.backend_dialect == "anthropic"
    assert config.log_level == "agent=debug"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ("this is not toml", "is not valid TOML"),
        ("[provider]\nx = 1\n", "must not be a table"),
    ],
)
def test_bad_config_file(
    captured: list[AgentConfig],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    fragment: str,
) -> None:
    config_file = tmp_path / "agent.toml"
    config_file.write_text(content)
    assert invoke("run", "--worker-secret", "s", "--config", str(config_file)) == 2
    err = capsys.readouterr().err
    assert "--config" in err
    assert fragment in err
    assert captured == []


def test_missing_config_file(
    captured: list[AgentConfig], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert invoke("run", "--config", str(tmp_path / "nope.toml")) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "env", "flag"),
    [
        (["run", "--max-concurrency", "many"], {"WORKER_SECRET": "s"}, "--max-concurrency"),
        (["run", "--max-concurrency", "0"], {"WORKER_SECRET": "s"}, "--max-concurrency"),
        (["run", "--proxy-url", "ftp://x"], {"WORKER_SECRET": "s"}, "--proxy-url"),
        (["run"], {}, "--worker-secret"),
        (["run"], {"WORKER_SECRET": "s", "DRAIN_TIMEOUT_SECS": "soon"}, "--drain-timeout"),
        (["run", "--no-such-flag"], {"WORKER_SECRET": "s"}, "--no-such-flag"),
        (["run", "--log-format", "xml"], {"WORKER_SECRET": "s"}, "--log-format"),
        (["run", "--log-level", "agent=loud"], {"WORKER_SECRET": "s"}, "--log-level"),
        (["--completions", "tcsh"], {}, "--completions"),
        ([], {}, "Missing command"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    captured: list[AgentConfig],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: dict[str, str],
    flag: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert invoke(*args) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("agent: error: ")
    assert flag in lines[0]
    assert out.out == ""
    assert captured == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish", "powershell"])
def test_completions_for_each_shell(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke("--completions", shell) == 0
    assert "_AGENT_COMPLETE" in capsys.readouterr().out


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke("run", "--version") == 0
    assert capsys.readouterr().out.startswith("agent ")


def test_several_relays_from_the_flag_and_from_a_config_list(
    captured: list[AgentConfig], tmp_path: Path
) -> None:
    assert invoke("run", "--worker-secret", "s", "--proxy-url", "http://a:1,http://b:2") == 0
    assert captured[0].relays == ("http://a:1", "http://b:2")
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        'worker_secret = "s"\n[agent]\nproxy-url = ["https://a.example", "https://b.example"]\n'
    )
    assert invoke("run", "--config", str(config_file)) == 0
    assert captured[1].relays == ("https://a.example", "https://b.example")
