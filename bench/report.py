"""The Markdown table of a results dict (printed, and pasted into bench/README.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = tuple[str, Any, Any, str, Callable[[float, float], bool] | None]


def _ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not theirs:
        return "–"
    return f"{ours / theirs:.2f}"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _rows(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    c = r.get("cached")
    if c:
        for n in (1, 20):
            o, t = c[f"ours_c{n}"], c[f"theirs_c{n}"]
            rows.append(
                (
                    f"1. cached, {n} conn: answers/s",
                    o["qps"],
                    t["qps"],
                    "≥ 1" if n == 20 else "",
                    (lambda a, b: a >= b) if n == 20 else None,
                )
            )
            rows.append((f"1. cached, {n} conn: p50 µs", o["p50_us"], t["p50_us"], "", None))
            rows.append(
                (
                    f"1. cached, {n} conn: p99 µs",
                    o["p99_us"],
                    t["p99_us"],
                    "ours ≤ 1000 µs" if n == 20 else "",
                    (lambda a, b: a <= 1000) if n == 20 else None,
                )
            )
            rows.append(
                (
                    f"1. cached, {n} conn: server CPU µs/answer",
                    o["cpu_us_per_answer"],
                    t["cpu_us_per_answer"],
                    "≤ 0.25" if n == 20 else "",
                    (lambda a, b: a <= b / 4) if n == 20 else None,
                )
            )
            for part in ("user", "system"):
                if f"{part}_us_per_answer" in o:
                    rows.append(
                        (
                            f"1. cached, {n} conn: of which {part} µs/answer",
                            o[f"{part}_us_per_answer"],
                            t[f"{part}_us_per_answer"],
                            "",
                            None,
                        )
                    )
    k = r.get("cold")
    if k:
        rows.append(
            (
                "2. 200 cold domains, 20 conn: p50 ms",
                k["ours"]["p50_us"] / 1000,
                k["theirs"]["p50_us"] / 1000,
                "",
                None,
            )
        )
        rows.append(
            (
                "2. 200 cold domains, 20 conn: p99 ms",
                k["ours"]["p99_us"] / 1000,
                k["theirs"]["p99_us"] / 1000,
                "≤ 0.33",
                lambda a, b: a <= b / 3,
            )
        )
        rows.append(
            (
                "2. 200 cold domains: server CPU µs/answer",
                k["ours"]["cpu_us_per_answer"],
                k["theirs"]["cpu_us_per_answer"],
                "",
                None,
            )
        )
        if "fixtures_cpu_us_per_answer" in k["ours"]:
            rows.append(
                (
                    "2. 200 cold domains: fixtures' CPU µs/answer (DNS + HTTPS, same cores)",
                    k["ours"]["fixtures_cpu_us_per_answer"],
                    k["theirs"]["fixtures_cpu_us_per_answer"],
                    "",
                    None,
                )
            )
    s = r.get("single_flight")
    if s:
        rows.append(
            (
                "3. 30 concurrent first lookups: OK answers (worst run, of 30)",
                s["ours"]["ok"],
                s["theirs"]["ok"],
                "30",
                lambda a, b: a == 30,
            )
        )
        rows.append(
            (
                "3. 30 concurrent first lookups: HTTPS fetches",
                s["ours"]["fetches"],
                s["theirs"]["fetches"],
                "ours = 1",
                lambda a, b: a == 1,
            )
        )
    m = r.get("memory")
    if m:
        n = m["filled_domains"]
        rows.append(("4. RSS idle, MB", m["ours_idle_mb"], m["theirs_idle_mb"], "", None))
        rows.append(
            (
                f"4. RSS after {n:,} fetched policies, MB",
                m["ours_filled_mb"],
                m["theirs_filled_mb"],
                "",
                None,
            )
        )
        rows.append(
            (
                f"4. time to fetch {n:,} policies (20 conn), s",
                m["ours_fill_seconds"],
                m["theirs_fill_seconds"],
                "",
                None,
            )
        )
        rows.append(
            (
                "4. RSS with 100k-entry store, all 100k answered, MB",
                m.get("ours_100k_mb"),
                m.get("theirs_100k_mb"),
                "ours ≤ 60 MB",
                lambda a, b: a <= 60,
            )
        )
        rows.append(
            (
                "4. start-up to first answer, s (ours: 100k store)",
                m["ours_100k_startup_s"],
                m["theirs_startup_s"],
                "ours ≤ 1 s",
                lambda a, b: a <= 1,
            )
        )
    f = r.get("refresh")
    if f:
        rows.append(
            (
                "5. refresh 10k domains: seconds",
                f["ours"]["seconds"],
                f["theirs"]["seconds"],
                "",
                None,
            )
        )
        rows.append(
            (
                "5. refresh 10k: peak open connections at the host",
                f["ours"]["peak_connections"],
                f["theirs"]["peak_connections"],
                "",
                None,
            )
        )
        rows.append(
            (
                "5. refresh 10k: HTTPS fetches",
                f["ours"]["fetches"],
                f["theirs"]["fetches"],
                "",
                None,
            )
        )
        rows.append(
            (
                "5. refresh 10k: server CPU s",
                f["ours"]["server_cpu_s"],
                f["theirs"]["server_cpu_s"],
                "",
                None,
            )
        )
    rows.extend(_rtt_rows(r.get("rtt")))
    rows.extend(_loop_rows(r.get("loops")))
    return rows


def _rtt_rows(t: dict[str, Any] | None) -> list[Row]:
    """Scenario 6: cold answers with a round-trip time on DNS and HTTPS (issue 17 targets)."""
    if not t:
        return []
    o, i, ms = t["ours"], t["theirs"], t["rtt_ms"]
    head = f"6. 200 cold domains, 20 conn, RTT {ms:g} ms"
    return [
        (f"{head}: p50 ms", o["p50_us"] / 1000, i["p50_us"] / 1000, "", None),
        (f"{head}: p99 ms", o["p99_us"] / 1000, i["p99_us"] / 1000, "≤ 0.8", _at_most(0.8)),
        (
            f"{head}: p50 round trips",
            o["p50_round_trips"],
            i["p50_round_trips"],
            "ours ≤ 5",
            lambda a, b: a <= 5,
        ),
        (f"{head}: p99 round trips", o["p99_round_trips"], i["p99_round_trips"], "", None),
        (
            f"6. 20 cold domains, 1 conn, RTT {ms:g} ms: p50 round trips",
            o["sequential_p50_round_trips"],
            i["sequential_p50_round_trips"],
            "",
            None,
        ),
        (
            "6. no-policy domain: DNS queries each",
            o["no_policy_dns_queries_per_domain"],
            i["no_policy_dns_queries_per_domain"],
            "",
            None,
        ),
        ("6. no-policy domain: p50 ms", o["no_policy_p50_ms"], i["no_policy_p50_ms"], "", None),
        (
            f"{head}: server CPU µs/answer",
            o.get("cpu_us_per_answer", 0),
            i.get("cpu_us_per_answer", 0),
            "",
            None,
        ),
        (
            f"{head}: emulated network late, p99 ms (DNS / relay)",
            f"{o.get('late_dns_p99_ms', 0):g} / {o.get('late_https_p99_ms', 0):g}",
            f"{i.get('late_dns_p99_ms', 0):g} / {i.get('late_https_p99_ms', 0):g}",
            "",
            None,
        ),
    ]


def _loop_rows(lp: dict[str, Any] | None) -> list[Row]:
    """Scenario 7: cached CPU per answer on each event loop, and as a multiple of the C echo's."""
    if not lp:
        return []
    echo = lp["echo"]["cpu_us_per_answer"] or 1.0
    rows: list[Row] = []
    for loop in ("asyncio", "uvloop"):
        o, i = lp[f"ours_{loop}"], lp[f"theirs_{loop}"]
        head = f"7. cached, 20 conn, both on {loop}"
        rows.append(
            (
                f"{head}: server CPU µs/answer",
                o["cpu_us_per_answer"],
                i["cpu_us_per_answer"],
                "",
                None,
            )
        )
        rows.append(
            (
                f"{head}: CPU / C echo's ({echo:.1f} µs)",
                round(o["cpu_us_per_answer"] / echo, 2),
                round(i["cpu_us_per_answer"] / echo, 2),
                "ours ≤ 1.5",
                lambda a, b: a <= 1.5,
            )
        )
        rows.append(
            (f"{head}: p99 µs", o["p99_us"], i["p99_us"], "ours < 1000", lambda a, b: a < 1000)
        )
        floor = lp.get(f"floor_{loop}")
        if floor:  # the event loop's own cost: a server that only looks the request up
            cost = floor["cpu_us_per_answer"]
            rows.append(
                (
                    f"{head}: CPU / a do-nothing server's on {loop} "
                    f"({cost:.1f} µs, {cost / echo:.2f}x echo)",
                    round(o["cpu_us_per_answer"] / cost, 2),
                    round(i["cpu_us_per_answer"] / cost, 2),
                    "",
                    None,
                )
            )
    return rows


def _at_most(ratio: float) -> Any:
    return lambda a, b: a <= b * ratio


def _ceiling(conns: int, run: dict[str, Any]) -> str:
    text = f"{conns} conn {run['qps']:,.0f} answers/s, p99 {run['p99_us']:.0f} µs"
    return text + f", echo server CPU {run['cpu_us_per_answer']:.1f} µs/answer"


def _pinning(pin: dict[str, Any]) -> str:
    if not pin.get("server"):
        return "no CPU pinning (server, load generator and fixtures share both cores)."
    server, loadgen = pin["server"], pin["loadgen"]
    return f"server pinned to CPU {server}, load generator and fixtures to CPU {loadgen}."


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Run {r['date']}{' (--quick)' if r['quick'] else ''}: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}; "
        f"load average at start {' '.join(m['loadavg_at_start'])}; " + _pinning(r["pinning"]),
        "",
        f"Event loop: ours {'uvloop' if r.get('ours_uses_uvloop') else 'asyncio'}, incumbent "
        f"{'uvloop' if r.get('incumbent_uses_uvloop') else 'asyncio (--disable-uvloop)'}"
        " (scenario 7 runs both on each).",
        "",
    ]
    rows = _rows(r)
    if rows:
        lines += [
            "| scenario / metric | ours | incumbent 1.5.1 | ours/theirs | target | met |",
            "|---|---:|---:|---:|---|---|",
        ]
    for label, ours, theirs, target, check in rows:
        met = ""
        if check is not None and isinstance(ours, int | float):
            met = (
                "yes" if check(ours, theirs if isinstance(theirs, int | float) else 0) else "**no**"
            )
        cells = [label, _fmt(ours), _fmt(theirs), _ratio(ours, theirs), target, met]
        lines.append("| " + " | ".join(cells) + " |")
    floor = (r.get("cold") or {}).get("tls_floor")
    if floor:
        lines += [
            "",
            "Cold-lookup floor (a bare TLS GET per new domain on uvloop against the same fixture, "
            f"no DNS, no HTTP library; bench/tls_floor.py): {floor['cpu_us_per_fetch']:,.0f} µs "
            "of CPU per fetch.",
        ]
    if r.get("fleet"):
        from fleet import markdown as fleet_markdown

        lines += fleet_markdown(r["fleet"])
    ceiling = r.get("ceiling")
    if ceiling:
        lines += [
            "",
            "Load generator ceiling (same runs against the C echo socketmap server): "
            + "; ".join(_ceiling(n, ceiling[f"c{n}"]) for n in (1, 20))
            + ".",
        ]
    return "\n".join(lines) + "\n"
