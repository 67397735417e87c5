"""The 1.2x fit rule, `recommend` on given hardware, and the hardware probes' parsers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from agent.llamafile.catalog import Model
from agent.llamafile.fit import Mark, assess, recommend
from agent.llamafile.hardware import Gpu, Hardware, detect
from tests.agent.llamafile.conftest import catalog_toml, entry

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from tests.agent.llamafile.conftest import Cli


def model(slug: str, ram_gb: float, *tags: str) -> Model:
    return Model(
        slug,
        slug,
        f"{slug}.llamafile",
        f"https://x/{slug}.llamafile",
        1,
        ram_gb,
        4096,
        "mit",
        tags or ("chat",),
    )


@pytest.mark.parametrize(
    ("ram", "mark"),
    [(12.0, Mark.FIT), (11.99, Mark.TIGHT), (10.0, Mark.TIGHT), (9.99, Mark.NO)],
)
def test_marks_at_the_boundaries(ram: float, mark: Mark) -> None:
    assert assess(model("m", 10.0), Hardware(ram)).mark is mark


def test_gpu_budget_is_vram_and_cpu_is_the_fallback() -> None:
    box = Hardware(32.0, (Gpu("nvidia", "RTX", 8.0),))
    on_gpu = assess(model("small", 6.0), box)
    assert (on_gpu.mark, on_gpu.where) == (Mark.FIT, "gpu")
    assert "VRAM (RTX)" in on_gpu.reason
    on_cpu = assess(model("big", 20.0), box)
    assert (on_cpu.mark, on_cpu.where) == (Mark.FIT, "cpu")
    assert "does not fit the VRAM" in on_cpu.reason
    apple = Hardware(16.0, (Gpu("apple", "Apple Silicon", 16.0),), unified=True)
    assert assess(model("m", 14.0), apple).where == "gpu"
    assert assess(model("m", 14.0), apple).mark is Mark.TIGHT


def test_recommend_picks_the_largest_fit_per_tag_and_says_why() -> None:
    models = [
        model("tiny", 1.0),
        model("mid", 5.0, "chat", "code"),
        model("huge", 40.0),
        model("eyes", 30.0, "vision"),
    ]
    picks = {p.tag: p for p in recommend(models, Hardware(8.0))}
    assert picks["chat"].model is not None
    assert picks["chat"].model.slug == "mid"
    assert "largest chat model that fits" in picks["chat"].why
    assert "huge" in picks["chat"].why  # named as too big
    assert picks["code"].model is not None
    assert picks["code"].model.slug == "mid"
    assert picks["vision"].model is None
    assert "nothing tagged vision fits" in picks["vision"].why
    assert set(picks) == {"chat", "code", "vision"}  # no entry, no answer


def test_recommend_prefers_the_gpu_then_falls_back_to_tight() -> None:
    models = [model("small", 5.0), model("large", 12.0)]
    gpu_box = Hardware(64.0, (Gpu("nvidia", "RTX", 8.0),))
    pick = recommend(models, gpu_box, ("chat",))[0]
    assert pick.model is not None
    assert pick.model.slug == "small"
    assert "CPU only, much slower (large)" in pick.why
    tight = recommend(models, Hardware(5.5), ("chat",))[0]
    assert tight.model is not None
    assert tight.model.slug == "small"
    assert tight.fit is not None
    assert tight.fit.mark is Mark.TIGHT


def test_recommend_command_uses_given_hardware(cli: Cli, home: Path) -> None:
    home.mkdir()
    (home / "user-catalog.toml").write_text(
        catalog_toml(
            [
                entry("s", "https://x/s", b"s", ram_gb=2.0),
                entry("m", "https://x/m", b"m", ram_gb=6.2),
                entry("l", "https://x/l", b"l", ram_gb=30.0),
            ]
        )
    )
    hardware = {"ram_gb": 64, "gpus": [{"vendor": "nvidia", "name": "T4", "vram_gb": 7.5}]}
    result = cli(
        "recommend", "--tag", "chat", "--json", env={"MODELRELAY_HARDWARE": json.dumps(hardware)}
    )
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["hardware"]["source"] == "$MODELRELAY_HARDWARE"
    (pick,) = doc["picks"]
    # m: 6.2 x 1.2 = 7.44 <= 7.5 GB VRAM; l fits the 64 GB RAM but only on the CPU.
    assert pick["model"] == "m"
    assert pick["fit"]["where"] == "gpu"
    assert pick["fit"]["mark"] == "fit"
    text = cli("recommend", "--tag", "chat", env={"MODELRELAY_HARDWARE": json.dumps(hardware)})
    assert "chat: m" in text.stdout
    bad = cli("recommend", env={"MODELRELAY_HARDWARE": "{}"})
    assert bad.code == 1
    assert "MODELRELAY_HARDWARE must be JSON like" in bad.stderr


NVIDIA = "NVIDIA GeForce RTX 4090, 24564\nNVIDIA GeForce RTX 3060, 12288\n"
ROCM = json.dumps(
    {"card0": {"VRAM Total Memory (B)": "17163091968", "Card Series": "Radeon RX 7800 XT"}}
)


def runner(outputs: dict[str, str]):
    def run(argv: Sequence[str]) -> str | None:
        return outputs.get(argv[0])

    return run


def test_probes_parse_the_tools_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELRELAY_HARDWARE", raising=False)
    nvidia = detect(runner({"nvidia-smi": NVIDIA}), system="Linux", machine="x86_64")
    assert [(g.vendor, g.name, g.vram_gb) for g in nvidia.gpus] == [
        ("nvidia", "NVIDIA GeForce RTX 4090", 24564 / 1024),
        ("nvidia", "NVIDIA GeForce RTX 3060", 12.0),
    ]
    assert nvidia.vram_gb == pytest.approx((24564 + 12288) / 1024)
    amd = detect(runner({"rocm-smi": ROCM}), system="Linux", machine="x86_64")
    assert amd.gpus == (Gpu("amd", "Radeon RX 7800 XT", 17163091968 / 1024**3),)
    cpu = detect(runner({}), system="Linux", machine="x86_64")
    assert cpu.gpus == ()
    assert cpu.ram_gb > 0.1
    apple = detect(runner({}), system="Darwin", machine="arm64")
    assert apple.unified
    assert apple.gpus[0].vendor == "apple"
