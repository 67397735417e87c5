"""LiteLLM as a client library: `litellm.completion` with `api_base` at the relay.

LiteLLM is heavy: its import takes seconds (more on a loaded box), so it is
imported once per session, outside any test's time budget, and its calls
(synchronous) run in a worker thread. ``LITELLM_LOCAL_MODEL_COST_MAP`` (set in
conftest) stops it fetching a price list from GitHub at import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest
import trio

if TYPE_CHECKING:
    from types import ModuleType

    from tests.e2e.conftest import Stack

# LiteLLM's streaming path makes pydantic rebuild models whose TypedDicts use
# `ReadOnly`, and pydantic warns about that; the suite turns warnings into errors.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"
)

HI = [{"role": "user", "content": "Say hello in one short sentence."}]
MAX_TOKENS = 12


@pytest.fixture(scope="session")
def litellm() -> ModuleType:
    try:
        import litellm  # slow: only when these tests run
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"litellm is not installed on CI: {exc}", pytrace=False)
        pytest.skip(f"LITELLM TESTS SKIPPED: litellm is not installed ({exc})")
    return litellm


def _kwargs(stack: Stack) -> dict[str, Any]:
    return {
        "model": f"openai/{stack.model}",
        "api_base": f"{stack.url}/v1",
        "api_key": "unused",
        "messages": HI,
        "max_tokens": MAX_TOKENS,
        "max_retries": 0,
        "num_retries": 0,
        "timeout": stack.timeout,
    }


async def test_litellm_completion(stack: Stack, litellm: ModuleType) -> None:
    with trio.fail_after(stack.timeout):
        response = await trio.to_thread.run_sync(
            lambda: litellm.completion(**_kwargs(stack)), abandon_on_cancel=True
        )
    assert response.choices[0].message.content
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage.completion_tokens > 0
    if stack.target.live:
        assert response.usage.completion_tokens <= MAX_TOKENS


async def test_litellm_completion_streaming(stack: Stack, litellm: ModuleType) -> None:
    def run() -> list[Any]:
        return list(litellm.completion(**_kwargs(stack), stream=True))

    with trio.fail_after(stack.timeout):
        chunks = await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes
    assert finishes[-1] in ("stop", "length")
