"""What clients need to know about a ready engine, asked from the engine itself.

TEI describes its limits at `/info` (`max_client_batch_size`, `max_batch_tokens`,
`max_input_length`); vLLM lists `max_model_len` per model at `/v1/models`. The result is a
set of registry Endpoint fields (`api`, `max_batch_size`, `max_batch_tokens`,
`max_input_tokens`, `max_model_len`, `metrics_url`) the pilot publishes with the ready state,
so clients never probe or guess the engine.
"""

from __future__ import annotations

from typing import Any

import httpx2


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def describe_engine(base_url: str, api_key: str | None, public_url: str | None = None,
                    timeout: float = 5.0) -> dict[str, Any]:
    """Endpoint fields for the server probed at `base_url` (`http://host:port`, no /v1).

    `public_url` is the same server as clients reach it (for `metrics_url`).

    Never raises: a field the engine does not describe is left out.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    fields: dict[str, Any] = {"metrics_url": f"{public_url or base_url}/metrics"}
    try:
        with httpx2.Client(timeout=timeout, headers=headers) as http:
            info = http.get(f"{base_url}/info")
            data = info.json() if info.status_code == 200 else None
            if isinstance(data, dict) and "max_client_batch_size" in data:
                fields.update(api="tei", max_batch_size=_int(data.get("max_client_batch_size")),
                              max_batch_tokens=_int(data.get("max_batch_tokens")),
                              max_input_tokens=_int(data.get("max_input_length")))
                return {k: v for k, v in fields.items() if v is not None}
            fields["api"] = "openai"
            models = http.get(f"{base_url}/v1/models")
            listed = models.json().get("data") if models.status_code == 200 else None
            if isinstance(listed, list) and listed and isinstance(listed[0], dict):
                length = _int(listed[0].get("max_model_len"))
                fields.update(max_model_len=length, max_input_tokens=length)
    except (httpx2.HTTPError, ValueError, AttributeError):
        pass
    return {k: v for k, v in fields.items() if v is not None}
