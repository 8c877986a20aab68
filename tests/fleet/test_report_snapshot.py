"""The fleet's snapshot codec and merge (pure): a re-upload replaces, the merge is
order-independent and its totals are the sums of its inputs; Redis values are validated."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta_sts_policyd.errors import ResultType
from mta_sts_policyd.fleet.report_snapshot import (
    NodeSnapshot,
    SnapshotInvalid,
    decode_snapshot,
    encode_snapshot,
    merge,
)
from mta_sts_policyd.tlsrpt.model import (
    DomainDay,
    FailureDetail,
    PolicyAggregate,
    PolicyRef,
    PolicyType,
)
from mta_sts_policyd.tlsrpt.report import ReportSettings, build_report

DAY = date(2026, 11, 21)
SETTINGS = ReportSettings("Org", "tlsrpt@sender.example")
DOMAINS = ("a.example", "b.example", "xn--strae-oqa.example")
RECORDS = (None, "v=TLSRPTv1;rua=mailto:r@a.example")
POLICIES = (
    PolicyRef(PolicyType.STS, "a.example", ("version: STSv1", "mode: enforce"), ("mx.a.example",)),
    PolicyRef(PolicyType.NO_POLICY_FOUND, "b.example"),
)
DETAILS = (
    FailureDetail(ResultType.CERTIFICATE_EXPIRED, receiving_mx_hostname="mx.a.example"),
    FailureDetail(ResultType.STARTTLS_NOT_SUPPORTED, receiving_ip="192.0.2.1"),
)

aggregates = st.builds(
    PolicyAggregate,
    st.sampled_from(POLICIES),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.lists(st.tuples(st.sampled_from(DETAILS), st.integers(1, 50)), max_size=2).map(tuple),
)
domain_days = st.builds(
    DomainDay,
    st.just(DAY),
    st.sampled_from(DOMAINS),
    st.sampled_from(RECORDS),
    st.lists(aggregates, min_size=1, max_size=3).map(tuple),
)
node_days = st.lists(domain_days, max_size=4)


def snap(node: str, dds: list[DomainDay], *, final: bool = True) -> NodeSnapshot:
    raw = encode_snapshot(node, DAY, final=final, domain_days=dds)
    return decode_snapshot(raw, node=node, day=DAY)


def totals(dds: list[DomainDay]) -> tuple[int, int, int]:
    aggs = [a for dd in dds for a in dd.policies]
    return (
        sum(a.successes for a in aggs),
        sum(a.failures for a in aggs),
        sum(c for a in aggs for _, c in a.details),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(node_days, min_size=1, max_size=6), st.randoms())
def test_merge_is_order_independent_and_totals_are_sums(
    nodes: list[list[DomainDay]], rnd: object
) -> None:
    snaps = {f"n{i}": snap(f"n{i}", dds) for i, dds in enumerate(nodes)}
    merged = merge(snaps)
    names = list(snaps)
    rnd.shuffle(names)  # type: ignore[attr-defined]
    assert merge({n: snaps[n] for n in names}) == merged
    assert totals(merged) == tuple(map(sum, zip(*(totals(d) for d in nodes), strict=True)))
    # one DomainDay per (domain, record), so one report each; the bytes do not depend on order
    keys = [(dd.report_domain, dd.tlsrpt_record) for dd in merged]
    assert len(keys) == len(set(keys))
    assert [build_report(dd, SETTINGS).json_bytes for dd in merged] == [
        build_report(dd, SETTINGS).json_bytes for dd in merge({n: snaps[n] for n in names})
    ]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(("n1", "n2", "n3")), node_days), min_size=1))
def test_re_uploads_replace_never_add(uploads: list[tuple[str, list[DomainDay]]]) -> None:
    """The hash field per node (HSET) modelled as a dict: however often a node uploads, only
    its last snapshot counts."""
    field: dict[str, NodeSnapshot] = {}
    last: dict[str, list[DomainDay]] = {}
    for node, dds in uploads:
        field[node] = snap(node, dds)
        field[node] = snap(node, dds)  # the same upload twice
        last[node] = dds
    assert totals(merge(field)) == tuple(
        map(sum, zip(*(totals(d) for d in last.values()), strict=True))
    )


@settings(max_examples=40, deadline=None)
@given(node_days)
def test_round_trip_keeps_every_count(dds: list[DomainDay]) -> None:
    merged = merge({"n1": snap("n1", dds)})
    assert totals(merged) == totals(dds)


def test_one_node_split_over_two_gives_the_same_report() -> None:
    agg = PolicyAggregate(POLICIES[0], 7, 3, ((DETAILS[0], 3),))
    half = PolicyAggregate(POLICIES[0], 4, 1, ((DETAILS[0], 1),))
    rest = PolicyAggregate(POLICIES[0], 3, 2, ((DETAILS[0], 2),))
    one = merge({"n1": snap("n1", [DomainDay(DAY, "a.example", RECORDS[1], (agg,))])})
    two = merge(
        {
            "n1": snap("n1", [DomainDay(DAY, "a.example", RECORDS[1], (half,))]),
            "n2": snap("n2", [DomainDay(DAY, "A.Example.", RECORDS[1], (rest,))]),
        }
    )
    assert [build_report(d, SETTINGS).json_bytes for d in one] == [
        build_report(d, SETTINGS).json_bytes for d in two
    ]


def _valid() -> dict[str, object]:
    dd = DomainDay(
        DAY, "a.example", None, (PolicyAggregate(POLICIES[0], 1, 1, ((DETAILS[0], 1),)),)
    )
    return dict(json.loads(encode_snapshot("n1", DAY, final=True, domain_days=[dd])))


def _with(path: tuple[object, ...], value: object) -> bytes:
    body: dict[str, object] = _valid()
    target: object = body
    for step in path[:-1]:
        target = target[step]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        _with(("v",), 2),
        _with(("node",), "n2"),  # stored under another node's name
        _with(("day",), "2026-11-22"),
        _with(("final",), "yes"),
        _with(("reports",), {}),
        _with(("reports", 0, "d"), "bad domain!"),
        _with(("reports", 0, "r"), "v=TLSRPTv1;\nrua=mailto:x@y"),
        _with(("reports", 0, "p", 0, "s"), -1),
        _with(("reports", 0, "p", 0, "f"), 1.5),
        _with(("reports", 0, "p", 0, "s"), True),
        _with(("reports", 0, "p", 0, "s"), 10**13),
        _with(("reports", 0, "p", 0, "k"), "{}"),
        _with(("reports", 0, "p", 0, "x"), {"not json": 1}),
        _with(("reports", 0, "p", 0, "x"), []),
    ],
)
def test_malformed_snapshots_are_rejected(raw: bytes) -> None:
    with pytest.raises(SnapshotInvalid):
        decode_snapshot(raw, node="n1", day=DAY)


def test_decoded_keys_are_canonical_again() -> None:
    """A policy key spelled differently (key order, upper case) still adds up with the rest."""
    body = _valid()
    report = body["reports"][0]  # type: ignore[index]
    key = json.loads(report["p"][0]["k"])
    key["d"] = "A.EXAMPLE"
    report["p"][0]["k"] = json.dumps(dict(reversed(list(key.items()))))
    odd = decode_snapshot(json.dumps(body), node="n1", day=DAY)
    plain = decode_snapshot(json.dumps(_valid()), node="n1", day=DAY)
    assert odd.reports == plain.reports and odd.sessions == 2
