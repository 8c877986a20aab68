"""The shared entry's JSON form: what a node writes reads back the same, and anything else read
from Redis (malformed, forged, inconsistent) is refused like an invalid fetched policy."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.fleet import policy_codec as codec
from mta_sts_policyd.policy.entry import CacheEntry
from mta_sts_policyd.policy.shared_model import SharedFailure
from mta_sts_policyd.sts.policy import parse_policy

D = "example.test"
NOW = 1_800_000_000.0
ENFORCE = (
    "version: STSv1\nmode: enforce\nmx: mail.example.test\nmx: *.example.net\nmax_age: 86400\n"
)


def entry(body: str = ENFORCE, fetched_at: float = NOW - 10) -> CacheEntry:
    return CacheEntry(D, policy_id="abc123", policy=parse_policy(body.encode()),
                      fetched_at=fetched_at)  # fmt: skip


def doc(**changes: object) -> bytes:
    data = json.loads(codec.encode_policy(entry(), "n1"))
    data.update(changes)
    return json.dumps(data).encode()


def test_a_written_entry_reads_back_as_the_same_policy() -> None:
    shared = codec.decode_policy(codec.encode_policy(entry(), "n1"), D, NOW, version=7)
    assert shared is not None
    assert shared.policy == entry().policy
    assert (shared.domain, shared.policy_id, shared.fetched_at, shared.version) == (
        D, "abc123", NOW - 10, 7,
    )  # fmt: skip
    assert codec.decode_policy(None, D, NOW) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        doc(v=2),
        doc(domain="other.test"),
        doc(id="has space"),
        doc(id="x" * 33),
        doc(id=None),
        doc(lines=["version: STSv1", "mode: enforce", "max_age: 86400"]),  # enforce needs mx
        doc(lines="version: STSv1"),
        doc(lines=[]),
        doc(mode="testing"),  # the stated mode is not what the lines say
        doc(max_age=31557600),
        doc(mx=["evil.example"]),
        doc(lines=["version: STSv1", "mode: none", "max_age: 86400"]),  # lines weaker than fields
        doc(lines=["version: STSv1\nmode: none", "mode: enforce", "mx: a.test", "max_age: 1"]),
        doc(fetched_at=NOW + 3600),  # a future fetch would win every comparison
        doc(fetched_at="1"),
        doc(fetched_at=float("nan")),
        doc(fetched_at=True),
        doc(node=""),
        doc(node="a b"),
        b"{" + b" " * (codec.MAX_VALUE + 1) + b"}",
    ],
)
def test_malformed_or_forged_entries_are_refused(raw: bytes) -> None:
    with pytest.raises(codec.SharedValueError):
        codec.decode_policy(raw, D, NOW)


def test_a_reply_injection_in_an_mx_line_is_refused() -> None:
    lines = ["version: STSv1", "mode: enforce", "mx: a.test protocols=!TLSv1.2", "max_age: 1"]
    with pytest.raises(codec.SharedValueError):
        codec.decode_policy(doc(lines=lines, mx=["a.test protocols=!TLSv1.2"]), D, NOW)


def test_failure_and_negative_records() -> None:
    failure = SharedFailure("abc123", NOW - 5, ResultType.STS_POLICY_FETCH_ERROR, "HTTP 500")
    assert codec.decode_failure(codec.encode_failure(failure), NOW) == failure
    with pytest.raises(codec.SharedValueError):
        codec.decode_failure(b'{"v":1,"id":"a","at":1,"result":"nonsense","reason":""}', NOW)
    assert codec.decode_negative(codec.encode_negative(NOW, NOW + 60), NOW, 300) == NOW + 60
    # A record claiming a longer time than this node's negative TTL is cut to it.
    assert codec.decode_negative(codec.encode_negative(NOW, NOW + 10**6), NOW, 300) == NOW + 300


@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_reader(raw: bytes) -> None:
    try:
        codec.decode_policy(raw, D, NOW)
        codec.decode_failure(raw, NOW)
        codec.decode_negative(raw, NOW, 300)
    except codec.SharedValueError:
        pass
