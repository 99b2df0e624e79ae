"""Client side: find endpoints in the registry, wait for them, balance and fail over.

`connect`/`aconnect` return an unchanged OpenAI SDK client whose httpx2 transport
(`transport.py`) routes each request over the pool of ready replicas (`routing.py`, `pool.py`).
"""
