"""`curl -N` streaming through the relay: events arrive as they are made.

curl runs under `trio.run_process` started in a nursery, so its stdout is
read while it runs; each read is timestamped against what the backend has
done so far.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

HI = [{"role": "user", "content": "Count from one to ten."}]

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@attrs.define
class Read:
    data: bytes
    at: float
    backend_done: bool


async def curl_stream(stack: Stack, body: dict[str, Any]) -> tuple[list[Read], int]:
    """POST `body` with ``curl -N``; every read of its stdout, and its exit code."""
    command = [
        "curl", "--silent", "--show-error", "--no-buffer", "--fail-with-body",
        "--max-time", str(int(stack.timeout)),
        "-H", "content-type: application/json",
        "--data-binary", json.dumps(body),
        f"{stack.url}/v1/chat/completions",
    ]  # fmt: skip
    reads: list[Read] = []
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
        )
        assert process.stdout is not None
        async for data in process.stdout:
            done = stack.fake is not None and any(
                r.done.is_set() for r in stack.fake.requests if r.method == "POST"
            )
            reads.append(Read(data, trio.current_time(), done))
    assert process.returncode is not None
    return reads, process.returncode


async def test_curl_n_streams_incrementally(fake_stack: Stack) -> None:
    # Four events half a second apart: the first must reach curl long before the last is made.
    body = {
        "model": fake_stack.model,
        "stream": True,
        "messages": HI,
        "fake": {"chunks": 4, "delay": 0.5},
    }
    with trio.fail_after(fake_stack.timeout):
        reads, code = await curl_stream(fake_stack, body)
    assert code == 0
    output = b"".join(r.data for r in reads)
    first_content = next(i for i, r in enumerate(reads) if b"tok0" in r.data)
    assert not reads[first_content].backend_done, "the first event waited for the whole stream"
    assert b"data: [DONE]" not in reads[first_content].data
    assert reads[-1].at - reads[first_content].at >= 1.0  # the other events came later
    assert output.endswith(b"data: [DONE]\n\n")
    events = [line for line in output.split(b"\n") if line.startswith(b"data: ")]
    assert len(events) == 1 + 4 + 1 + 1  # role, 4 pieces, finish, [DONE]


@pytest.mark.live
async def test_curl_n_streams_llama_incrementally(llama_stack: Stack) -> None:
    body = {"model": llama_stack.model, "stream": True, "messages": HI, "max_tokens": 24}
    with trio.fail_after(llama_stack.timeout):
        reads, code = await curl_stream(llama_stack, body)
    assert code == 0
    output = b"".join(r.data for r in reads)
    assert output.endswith(b"data: [DONE]\n\n")
    # Tokens arrived over several reads: the first data line before the end.
    with_data = [r for r in reads if b"data: " in r.data]
    assert len(with_data) >= 2
    assert b"[DONE]" not in with_data[0].data
    pieces = []
    for line in output.split(b"\n"):
        if line.startswith(b"data: {"):
            choices = json.loads(line[6:])["choices"]
            if choices:
                pieces.append(choices[0]["delta"].get("content") or "")
    assert "".join(pieces).strip()
