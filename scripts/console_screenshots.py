"""Take the console's screenshots for the docs (docs/images/console-*.png).

Starts a real relay (with an admin token), two agents on the fake backend,
sends about half a minute of varied traffic so the charts have something to
draw, cordons one worker and creates a key, then photographs each page at
desktop and phone widths, light and dark, with Debian's chromium.

    .venv/bin/python scripts/console_screenshots.py [--out docs/images]

Needs `apt-get install chromium` and the test extra (playwright). Uses only
127.0.0.1 and ephemeral ports.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_backend import FakeBackend
from tests.integration.procs import agent_process, relay_process
from tests.relay.console.browser import BrowserRun, run_in_browser

ADMIN = "screenshot-admin-token"
TRAFFIC_SECS = 32.0

# (file stem, page path, width, theme, setup step to show)
SHOTS = [
    ("console-dashboard-light", "/console", 1280, "light", None),
    ("console-dashboard-dark", "/console", 1280, "dark", None),
    ("console-dashboard-phone-light", "/console", 375, "light", None),
    ("console-dashboard-phone-dark", "/console", 375, "dark", None),
    ("console-setup-light", "/console/setup", 1280, "light", 3),
    ("console-setup-phone-dark", "/console/setup", 375, "dark", 3),
    ("console-integrate-dark", "/console/integrate", 1280, "dark", None),
    ("console-integrate-phone-light", "/console/integrate", 375, "light", None),
]


async def traffic(client: httpx.AsyncClient, until: float) -> None:
    rng = random.Random(7)
    while trio.current_time() < until:
        body = {
            "model": "fake-model",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "fake": {"chunks": rng.randint(3, 12), "delay": rng.uniform(0.005, 0.06)},
        }
        if rng.random() < 0.04:
            body["fake"] = {"status": 500}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for _ in response.aiter_bytes():
                pass


async def main(out: Path) -> None:
    await trio.Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as data:
        async with trio.open_nursery() as nursery:
            backend = FakeBackend(models=["fake-model"])
            await nursery.start(backend.run)
            async with (
                relay_process("--admin-token", ADMIN, "--data-dir", data) as (relay, url),
                agent_process(
                    relay, backend.url, "--worker-name", "gpu-a", "--max-concurrency", "4"
                ),
                agent_process(relay, backend.url, "--worker-name", "gpu-b"),
                httpx.AsyncClient(base_url=url, timeout=30) as client,
            ):
                auth = {"authorization": f"Bearer {ADMIN}"}
                await client.post("/admin/keys", json={"name": "laptop"}, headers=auth)
                until = trio.current_time() + TRAFFIC_SECS
                async with trio.open_nursery() as load:
                    for _ in range(3):
                        load.start_soon(traffic, client, until)
                await client.post("/admin/workers/gpu-b/cordon", headers=auth)

                def script(b: BrowserRun) -> None:
                    b.login(b.page, ADMIN)
                    b.page.wait_for_selector("#charts .model-charts")
                    for stem, path, width, theme, step in SHOTS:
                        page = b.page
                        page.set_viewport_size({"width": width, "height": 800})
                        page.emulate_media(color_scheme=theme)
                        page.goto(url + path)
                        page.wait_for_selector("#live.on")
                        if step is not None:
                            for _ in range(step):
                                page.click("#next")
                            page.fill("#worker-name", "gpu-c")
                        if path.endswith("integrate"):
                            page.click("#try-send")
                            page.wait_for_selector("#try-status:has-text('Done')")
                        page.locator("h1").click()  # no focus ring in the picture
                        page.wait_for_timeout(300)
                        page.screenshot(path=str(out / f"{stem}.png"))
                        print(f"wrote {out / stem}.png")

                errors = await run_in_browser(url, script)
                if errors:
                    print("browser errors:", *errors, sep="\n  ")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    trio.run(main, parser.parse_args().out)
