"""Judge a few items with the library (in-process; `nerschat judge` adds shards and Parsl).

    nerschat serve --engine vllm --model local:gemma-3-270m &
    python examples/judge.py
"""

from __future__ import annotations

import asyncio

import nerschat
from nerschat.workflows.judge import JudgeItem, JudgeOptions, judge_item

ITEMS = [
    JudgeItem("capital", ["Paris", "Lyon"], {"question": "What is the capital of France?"}),
    JudgeItem("planet", ["Mars", "Venus"], {"question": "Which planet is called the red planet?"}),
]


async def main() -> None:
    model = nerschat.endpoints(kind="llm")[0].model if nerschat.endpoints(kind="llm") else None
    client = nerschat.aconnect(model, kind="llm", wait_timeout=600)
    model = model or nerschat.endpoints(kind="llm")[0].model
    options = JudgeOptions(model=model, reasoning_tokens=48, shuffle=True, seed=1)
    results = await asyncio.gather(*(judge_item(client, item, options) for item in ITEMS))
    for result in results:
        print(f"{result['id']}: chose {result['answer']!r} (logprobs {result.get('logprobs')}); "
              f"error={result['error']}")
    await client.close()


asyncio.run(main())
