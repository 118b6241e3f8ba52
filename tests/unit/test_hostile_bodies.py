"""Hostile message bodies: every one becomes a rejection, and none stops the runner or the Lambda.

Before the bounded decoder, ``"[" * 5000`` raised ``RecursionError`` out of the runner's
receive loop (exit 1, the rest of the batch stranded), and a 5000-digit integer raised
``ValueError`` out of the message parser.
"""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2_downloader.adapters.hub.urls import check_url
from s2_downloader.adapters.wire import MAX_BODY_BYTES, MAX_DEPTH, parse_download_message, peek_granule_id
from s2_downloader.domain import State
from s2_downloader.domain.errors import BadRequest
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.entrypoints.lambda_handler import process_batch
from s2_downloader.entrypoints.runner import Runner, RunnerSettings
from tests.unit.fake_queue import FakeQueue
from tests.unit.test_lambda_batch import Context, Requeue
from tests.unit.world import HUB, World

GOOD = {"id": "abc", "filename": "abc.zip", "download_url": f"{HUB}/p/abc/$value"}


def on_hub(url: str) -> None:
    """The hub rule of these tests: the URL rules, and the origin of the fake hub."""
    if check_url(url) != ("https", "hub.test", 443):
        msg = f"{url[:80]!r} is not on the hub"
        raise BadRequest(msg)


def _deep(opening: str, closing: str) -> st.SearchStrategy[str]:
    return st.integers(MAX_DEPTH + 1, 60_000).flatmap(
        lambda n: st.sampled_from([opening * n, opening * n + closing * n, f'{{"id": {opening * n}'])
    )


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _with(field: str) -> st.SearchStrategy[str]:
    return _json_values.filter(lambda v: not isinstance(v, str)).map(lambda v: json.dumps({**GOOD, field: v}))


def hostile_bodies() -> st.SearchStrategy[str]:
    """Bodies meant to break a parser: deep nesting, huge numbers, oversize, bad text, wrong shapes."""
    digits = st.integers(401, 20_000)
    return st.one_of(
        _deep("[", "]"),
        _deep('{"a":', "}"),
        _deep("[{", "}]"),
        digits.map(lambda n: '{"id": ' + "9" * n + "}"),
        digits.map(lambda n: json.dumps(GOOD)[:-1] + ', "x": -' + "1" * n + "}"),
        digits.map(lambda n: json.dumps(GOOD)[:-1] + ', "x": 0.' + "1" * n + "e99999}"),
        st.sampled_from(["1e999999", "-1e400", "NaN", '{"id": Infinity}', "", " ", "\x00", "null"]),
        st.integers(MAX_BODY_BYTES - 20, MAX_BODY_BYTES + 5000).map(
            lambda n: json.dumps({**GOOD, "pad": "x" * n})
        ),
        st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),
        st.text(max_size=200),
        st.sampled_from(['"\\ud800"', '{"id": "\\udfff"}', json.dumps({**GOOD, "filename": "a\udcff"})]),
        st.sampled_from(["\x00" + json.dumps(GOOD), json.dumps(GOOD) + "\x00", json.dumps(GOOD)[:-1]]),
        _json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps),
        _with("id"),
        _with("filename"),
        _with("download_url"),
        st.sampled_from([json.dumps(GOOD)[:-1] + ', "id": "../x"}', '{"id": "a", "id": "b"}']),
        st.sampled_from(
            [
                json.dumps({**GOOD, "download_url": "https://evil.test\\@hub.test/x"}),
                json.dumps({**GOOD, "download_url": "https://user@hub.test/x"}),
                json.dumps({**GOOD, "download_url": "https://hub.test:99999/x"}),
                json.dumps({**GOOD, "download_url": "https://[::1/x"}),
                json.dumps({**GOOD, "id": "../../etc"}),
            ]
        ),
    )


@given(hostile_bodies())
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_any_body_is_a_request_or_a_bad_request(body: str) -> None:
    """Whatever the body, parsing returns a request or raises BadRequest, and the peek never raises."""
    try:
        result: DownloadRequest | str = parse_download_message(body, on_hub)
    except BadRequest as exc:
        result = exc.reason
    assert isinstance(result, DownloadRequest) or (isinstance(result, str) and result)
    peeked = peek_granule_id(body)
    assert peeked is None or isinstance(peeked, str)


@pytest.mark.parametrize(
    "body",
    ["[" * 5000, '{"a":' * 5000, '{"id": ' + "9" * 5000 + "}", "[" * 50_000 + "]" * 50_000],
)
def test_the_bodies_that_crashed_the_runner_are_bad_requests(body: str) -> None:
    """The reproduced crashes (deep nesting, a 5000-digit integer) are plain rejections now."""
    with pytest.raises(BadRequest):
        parse_download_message(body, on_hub)
    assert None is peek_granule_id(body)


def _good(name: str) -> str:
    return json.dumps({"id": name, "filename": f"{name}.zip", "download_url": f"{HUB}/p/{name}/$value"})


@given(st.lists(hostile_bodies(), min_size=1, max_size=4))
@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_the_runner_survives_hostile_bodies_and_handles_the_rest(bodies: list[str]) -> None:
    """Hostile bodies among good ones: the runner exits 0, every good granule is verified, and each
    hostile one is rejected (deleted, the queue having no dead-letter queue here)."""
    world = World()
    queue = FakeQueue(redrive=False)
    for name in ("good1", "good2"):
        world.add(name, name.encode() * 10)
    queue.send(_good("good1"))
    for body in bodies:
        queue.send(body)
    queue.send(_good("good2"))
    runner = Runner(
        queue=queue,
        context=world.context(),
        check_url=on_hub,
        settings=RunnerSettings(until_empty=True, empty_interval=0.01, concurrency=3),
    )
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run()))
    thread.start()
    thread.join(30)
    assert ([0], {}) == (outcome, queue.messages)
    assert State.VERIFIED == world.store.granules["good1"].state == world.store.granules["good2"].state
    assert len(bodies) == dict(runner.board.outcomes).get("rejected", 0)


@given(st.lists(hostile_bodies(), min_size=1, max_size=8))
@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_the_lambda_rejects_hostile_records_and_handles_the_rest(bodies: list[str]) -> None:
    """Hostile records in a batch are named as failures (for the redrive policy); the good record
    among them is verified and not named."""
    world = World()
    world.add("good", b"good bytes")
    records = [{"messageId": f"h{i}", "body": body} for i, body in enumerate(bodies)]
    records.insert(len(records) // 2, {"messageId": "g", "body": _good("good")})
    response = process_batch(
        {"Records": records}, Context(), attempt_context=world.context(), requeue=Requeue(), check_url=on_hub
    )
    expected = [{"itemIdentifier": f"h{i}"} for i in range(len(bodies))]
    assert {"batchItemFailures": expected} == response
    assert State.VERIFIED == world.store.granules["good"].state


def test_a_record_without_a_string_body_is_rejected() -> None:
    """A record whose body is missing or not a string is bad input, not an exception."""
    world = World()
    records = [{"messageId": "1"}, {"messageId": "2", "body": 42}, {"messageId": "3", "body": None}]
    response = process_batch(
        {"Records": records}, Context(), attempt_context=world.context(), requeue=Requeue(), check_url=on_hub
    )
    assert {"batchItemFailures": [{"itemIdentifier": i} for i in ("1", "2", "3")]} == response
