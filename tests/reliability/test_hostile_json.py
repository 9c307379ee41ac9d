"""Hostile JSON sent to the live service (`bentoml serve`, the default limits, one worker): nesting 10,000
levels deep, objects where strings belong, huge arrays, numbers of 10,000 digits, duplicate, oversized
and countless keys. Every API route answers 4xx with a short JSON error in well under its timeout,
and the worker keeps serving. One server for the module (tests/serving/conftest.py starts it)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from serving.schemas import MAX_JSON_DEPTH, body_problem
from tests.serving.conftest import serve_bundle

SENT_AT = b'"2026-11-20T21:13:05+08:00"'
HELLO, WILL_BUY = json.dumps("在吗", ensure_ascii=False).encode(), json.dumps("有货我就拍", ensure_ascii=False).encode()
MAX_ERROR_BYTES = 64 * 1024  # a few errors, never one per item (main: 18 MB for 200,000 extra keys)
MAX_SECONDS = 8.0  # under serving.timeout_s (10): the worker answered, no 504


def _turn(text: bytes = WILL_BUY, extra: bytes = b"") -> bytes:
    return b'{"role": "buyer", "text": ' + text + b', "sent_at": ' + SENT_AT + extra + b"}"


def _conversation(turns: bytes, flag: bool) -> bytes:
    ids = b'"conversation_id": "c1", "buyer_id": "b1", "shop_id": "s1", ' if flag else b'"conversation_id": "c1", '
    return b"{" + ids + b'"messages": [' + turns + b'], "ordered": false}'


def list_slot(route: str, items: bytes) -> bytes:
    """A body of `route` with `items` (raw JSON) in its list: the messages, the turns, the conversations."""
    if route == "/classify":
        return b'{"messages": [' + items + b"]}"
    if route == "/score_conversation":
        return b'{"conversation": ' + _conversation(items, flag=False) + b"}"
    return b'{"conversations": [' + items + b"]}"


def text_slot(route: str, value: bytes) -> bytes:
    """A body of `route` with `value` (raw JSON) where a message text belongs."""
    if route == "/classify":
        return list_slot(route, value)
    if route == "/score_conversation":
        return list_slot(route, _turn(value))
    return list_slot(route, _conversation(_turn(value), flag=True))


def innermost(route: str, turn: bytes) -> bytes:
    """A body of `route` whose (only) turn is `turn`; /classify has no turns: its messages hold it."""
    if route == "/flag":
        return list_slot(route, _conversation(turn, flag=True))
    return list_slot(route, turn)


def many(item: bytes, count: int) -> bytes:
    return b",".join([item] * count)


def wrong_everywhere(route: str) -> bytes:
    """Every item of every list of the wrong type: main answered with one error per item."""
    if route == "/classify":
        return list_slot(route, many(b'{"a": [1]}', 1000))
    bad_turns = many(b'{"role": "buyer", "text": {"a": [1]}, "sent_at": null}', 500)
    if route == "/score_conversation":
        return list_slot(route, bad_turns)
    return list_slot(route, many(_conversation(bad_turns, flag=True), 20))


def extra_keys(route: str, count: int) -> bytes:
    keys = b",".join(b'"k%d": 1' % i for i in range(count))
    return text_slot(route, HELLO)[:-1] + b", " + keys + b"}"


def duplicate_key(route: str) -> bytes:
    """The same field twice in the innermost object: the two copies say different things."""
    if route == "/classify":
        return b'{"messages": [' + HELLO + b'], "messages": [' + WILL_BUY + b"]}"
    return innermost(route, _turn(extra=b', "text": ' + HELLO))


ROUTES = ("/classify", "/score_conversation", "/flag")
NESTED = ("nested deeper", "recursion limit")  # main: pydantic's parser stops at 200 levels; now refused at MAX_JSON_DEPTH first
CASES = {  # name -> (body of a route, the error names one of these; None: any reason)
    # held on main already (4xx, short, the worker serving):
    "array_nested_10000_deep": (lambda r: text_slot(r, b"[" * 10_000 + b"]" * 10_000), NESTED),
    "object_nested_10000_deep": (lambda r: text_slot(r, b'{"a":' * 10_000 + b"1" + b"}" * 10_000), NESTED),
    "unclosed_100000_deep": (lambda r: text_slot(r, b"[" * 100_000), NESTED),
    "whole_body_nested_10000_deep": (lambda r: b"[" * 10_000 + b"]" * 10_000, NESTED),
    "object_where_a_string_belongs": (lambda r: text_slot(r, b'{"a": {"b": ["c"]}}'), ("valid string",)),
    "null_where_a_string_belongs": (lambda r: text_slot(r, b"null"), ("valid string",)),
    "a_million_nulls": (lambda r: list_slot(r, many(b"null", 1_000_000)), ("at most", "valid string", "an object")),
    "a_million_empty_objects": (lambda r: list_slot(r, many(b"{}", 1_000_000)), ("at most",)),
    "a_number_of_10000_digits": (lambda r: text_slot(r, b"9" * 10_000), ("number out of range",)),
    "a_fraction_of_10000_digits": (lambda r: text_slot(r, b"0." + b"3" * 10_000 + b"e-99999"), ("valid string",)),
    # main: one error per item or key, 90 KB to 18 MB of answer (and the same in the log); a key echoed whole; duplicates taken
    "wrong_type_in_every_item": (wrong_everywhere, ("valid",)),
    "200000_extra_keys": (lambda r: extra_keys(r, 200_000), ("keys",)),
    "a_key_of_a_million_characters": (lambda r: text_slot(r, b'"x"')[:-1] + b', "' + b"k" * 1_000_000 + b'": 1}', ("longer than",)),
    "duplicate_key": (duplicate_key, ("duplicate key",)),
}


@pytest.fixture(scope="module")
def live(flag_bundle_dir, tmp_path_factory):
    """`bentoml serve` with configs/default.yaml (one worker) on the small test bundle."""
    server = serve_bundle(flag_bundle_dir, tmp_path_factory.mktemp("hostile-json"))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield server, client
    finally:
        server.stop()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(CASES))
def test_hostile_json_is_a_short_4xx_and_the_worker_keeps_serving(live, case, route):
    server, client = live
    build, words = CASES[case]
    body = build(route)
    started = time.monotonic()
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    elapsed = time.monotonic() - started
    assert response.status_code in (400, 413, 422), (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    assert len(response.content) < MAX_ERROR_BYTES, f"{len(response.content)} bytes of errors for a {len(body)}-byte body"
    error = response.json()["error"]
    assert isinstance(error, str) and error
    assert any(word in error for word in words), error
    assert elapsed < MAX_SECONDS, f"{elapsed:.1f} s"
    assert client.post("/classify", json={"messages": ["在吗"]}).status_code == 200
    assert server.process.poll() is None


def test_duplicate_keys_are_refused_even_when_both_copies_are_valid(live):
    _, client = live
    response = client.post("/classify", content=b'{"messages": ["a"], "explain": false, "explain": true}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == (
        'body: duplicate key "explain" in one object; each field may appear once'), response.text


def test_the_log_has_no_traceback_and_no_echoed_key(live):
    server, client = live
    assert client.get("/livez").status_code == 200
    log = server.log()
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
    assert "k" * 100 not in log  # an oversized key is neither answered back nor logged


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 16_000_000,
        b'{"a":' * 3_000_000,
        b"[" + many(b"{}", 5_000_000) + b"]",
        b'{"k": "' + b"\\\\" * 7_000_000 + b'"}',
        b'"' * 16_000_000,
    ],
    ids=["brackets", "open_objects", "empty_objects", "escapes", "quotes"],
)
def test_the_body_check_takes_linear_time_and_never_recurses(body):
    started = time.monotonic()
    problem = body_problem(body, max_containers=100_402)
    # ~0.5 s here when the machine is idle; a quadratic check of a 16 MB body would take hours. The bound is
    # loose on purpose: it failed at 3 s under a loaded 2-core machine, which says nothing about the check.
    assert time.monotonic() - started < 30.0
    assert problem is None or "nested deeper" in problem or "objects and arrays" in problem
    assert body_problem(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)) is not None
    assert body_problem(json.dumps({"conversations": [{"messages": [{"text": "[[[[[[[[[[{{{{{{{"}]}]}).encode()) is None
