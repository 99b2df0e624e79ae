"""Chat completions for nerschat's own workflows, without the SDK's per-call body transform.

`openai.AsyncOpenAI.chat.completions.create(...)` first walks its TypedDict annotations over
the whole request body (`async_maybe_transform`) before sending it: on a fast server that is
about a third of a judging run's CPU (py-spy over 8,000 judged items on a stub that answers at
once). The judges build their bodies as plain JSON already, so `create_chat` posts them as
they are through the same client (`AsyncOpenAI.post`, the SDK's documented way to reach any
route: same retries, timeouts, errors, auth and transport) and parses the reply into the SDK's
`ChatCompletion`, so callers read it exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import openai
from openai.types.chat import ChatCompletion


async def create_chat(client: openai.AsyncOpenAI, body: Mapping[str, Any], *,
                      headers: Mapping[str, str] | None = None) -> ChatCompletion:
    """POST `body` (a `/chat/completions` request, plain JSON values) and parse the reply.

    Raises what `client.chat.completions.create` raises (`openai.APIStatusError` and kin).
    """
    options: Any = {"headers": dict(headers)} if headers else {}
    return await client.post("/chat/completions", body=dict(body), cast_to=ChatCompletion,
                             options=options)


__all__ = ["create_chat"]
