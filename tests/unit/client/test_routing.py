"""The routing core's pure parts: request and reply inspection, settings, outliers."""

from __future__ import annotations

import time

import pytest

from nerschat.client.routing import (
    MIN_COOLDOWN,
    EndpointPool,
    RoutingSettings,
    is_streamed,
    model_of,
    reply_problem,
)
from nerschat.registry import Registry
from tests.conftest import make_endpoint


def test_request_inspection() -> None:
    assert model_of(b'{"model": "m1", "stream": true}') == "m1"
    assert model_of(b"not json") is None
    assert is_streamed(b'{"model": "m1", "stream":true}')
    assert not is_streamed(b'{"model": "m1", "stream": false}')
    assert not is_streamed(b'{"messages": [{"content": "stream"}]}')


@pytest.mark.parametrize(("path", "body", "problem"), [
    ("/v1/chat/completions", b'{"choices": []}', "non-empty list"),
    ("/v1/chat/completions", b'{"choices": "oops"}', "non-empty list"),
    ("/v1/chat/completions", b'{"choices": [{"index": 0}]}', None),
    ("/v1/embeddings", b'{"data": [{"index": 0, "embedding": [1]}, {"index": 0, "embedding": [2]}]}', "repeat"),
    ("/v1/embeddings", b'{"data": [{"index": 5, "embedding": [1]}]}', "out of range"),
    ("/v1/embeddings", b'{"data": [{"index": 0, "embedding": [1]}, {"index": 1, "embedding": [1, 2]}]}', "dimensions"),
    ("/embed", b'[[0.1], [0.2, 0.3]]', "dimensions"),
    ("/v1/chat/completions", b"<html>502</html>", "not a JSON object"),
    ("/v1/chat/completions", b'{"id": "x"}', "no 'choices' field"),
    ("/v1/completions", b'{"choices": [ {not json', "not a JSON object"),
    ("/v1/embeddings", b'{"data": []}\n', None),
    ("/v1/embeddings", b'{"object": "list"}', "no 'data' field"),
    ("/embed", b"[[0.1, 0.2]]", None),
])
def test_reply_problem(path: str, body: bytes, problem: str | None) -> None:
    found = reply_problem(path, body)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(("request_body", "reply", "problem"), [
    (b'{"input": ["a", "b"]}', b'{"data": [{"index": 0, "embedding": "AAAA"}]}', "1 vectors for 2"),
    (b'{"input": "a"}', b'{"data": [{"index": 0, "embedding": "AAAA"}]}', None),
    (b'{"input": [1, 2, 3]}', b'{"data": [{"index": 0, "embedding": [1.0]}]}', None),
    (b'{"inputs": ["a", "b"]}', b"[[0.1]]", "1 vectors for 2"),
])
def test_embedding_replies_have_one_vector_per_text(request_body: bytes, reply: bytes,
                                                     problem: str | None) -> None:
    path = "/embed" if b"inputs" in request_body else "/v1/embeddings"
    found = reply_problem(path, reply, request_body)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="first_byte_timeout"):
        RoutingSettings(first_byte_timeout=-1)
    with pytest.raises(ValueError, match="max_attempts"):
        RoutingSettings(max_attempts=0)


def test_a_lone_endpoint_is_never_an_outlier(registry: Registry) -> None:
    registry.publish(make_endpoint(id="only"))
    pool = EndpointPool(registry, "m1")
    for _ in range(50):
        load = pool.acquire()
        pool.release(load, "error")
    (load,) = pool.loads()
    assert load.ejections == 0 and load.errors == 50 and load.cooldown_until == 0.0


def test_requests_failing_together_are_one_failure_in_a_row(registry: Registry) -> None:
    # 11 requests in flight on one replica time out at once (an accept queue overflowing):
    # one failure, the shortest cool-down, not 2**10 times it.
    registry.publish(make_endpoint(id="a"))
    registry.publish(make_endpoint(id="b", url="http://b:1/v1"))
    pool = EndpointPool(registry, "m1")
    pool.refresh(force=True)
    a = next(load for load in pool.loads() if load.id == "a")
    for _ in range(11):
        a.outstanding += 1
        pool.release(a, "failed")
    assert a.failovers == 11 and a.consecutive_failures == 1
    assert a.cooldown_until - time.monotonic() <= MIN_COOLDOWN
    a.cooldown_until = 0.0  # over: the next failure is one more in a row
    a.outstanding += 1
    pool.release(a, "failed")
    assert a.consecutive_failures == 2
    assert MIN_COOLDOWN < a.cooldown_until - time.monotonic() <= 2 * MIN_COOLDOWN
