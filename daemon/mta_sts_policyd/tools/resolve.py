"""`resolve DOMAIN`: run discovery directly and explain every step (operator tool)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mta_sts_policyd.discovery.client import Discovery
from mta_sts_policyd.errors import DiscoveryError, DnsLookupError
from mta_sts_policyd.postfix.policy_reply import render_policy_reply
from mta_sts_policyd.sts.keys import policy_domain_for_key
from mta_sts_policyd.sts.match import patterns_matching
from mta_sts_policyd.sts.model import TxtRecord


@dataclass
class Explanation:
    """What `resolve` found. The exit code is the CLI's (cli/exit_codes.py): it follows
    `reply` like `query` does, except that `temporary` (nothing could be decided) is 75."""

    key: str
    domain: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    reply: str = "NOTFOUND "
    temporary: bool = False

    def step(self, name: str, ok: bool, **details: Any) -> None:
        self.steps.append({"step": name, "ok": ok, **details})

    def as_json(self) -> dict[str, Any]:
        out = {"key": self.key, "policy_domain": self.domain, "steps": self.steps,
               "reply": self.reply, "temporary": self.temporary}  # fmt: skip
        if self.temporary:  # an error like every command's (README: `--json` errors)
            out |= {"ok": False, "error": self.failure()}
        return out

    def failure(self) -> str:
        """The failed step and why, for a result that could not be decided."""
        failed = [s for s in self.steps if not s["ok"]]
        if not failed:
            return ""
        last = failed[-1]
        return f"{last['step']}: {last.get('error') or last.get('reason') or 'failed'}"

    def as_text(self) -> str:
        lines = [f"key: {self.key}", f"policy domain: {self.domain or '(no lookup)'}"]
        for s in self.steps:
            mark = "ok " if s["ok"] else "-- "
            extra = {k: v for k, v in s.items() if k not in ("step", "ok")}
            lines.append(f"{mark}{s['step']}")
            lines.extend(f"     {k}: {_show(v)}" for k, v in extra.items())
        lines.append(f"Postfix would get: {self.reply}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "\n       ".join(str(v) for v in value) if value else "(none)"
    return "-" if value is None or value == "" else str(value)


async def explain(discovery: Discovery, key: str, *, sts_attributes: bool) -> Explanation:
    out = Explanation(key=key, domain=policy_domain_for_key(key))
    if out.domain is None:
        out.step("key", False, reason="parent-domain, IP literal, path or invalid name: no lookup")
        return out
    domain = out.domain
    try:
        txt = await discovery.lookup_txt(domain)
    except DnsLookupError as exc:
        out.step(f"TXT _mta-sts.{domain}", False, error=exc.reason)
        out.temporary = True
        return out
    record = txt.result
    out.step(f"TXT _mta-sts.{domain}", isinstance(record, TxtRecord), records=list(txt.records),
             ttl=txt.ttl, result=f"id={record.id}" if isinstance(record, TxtRecord)
             else record.reason)  # fmt: skip
    if not isinstance(record, TxtRecord):
        return out
    try:
        fetched = await discovery.fetch_policy(domain)
    except DiscoveryError as exc:
        out.step(f"HTTPS https://mta-sts.{domain}/.well-known/mta-sts.txt", False,
                 result_type=exc.result_type.value, reason=exc.reason)  # fmt: skip
        out.temporary = exc.result_type.value.endswith("fetch-error")
        return out
    policy = fetched.policy
    out.step(f"HTTPS {fetched.url}", True, status=fetched.status,
             content_type=fetched.content_type, mode=policy.mode.value,
             max_age=policy.max_age, mx=list(policy.mx), lines=list(policy.lines))  # fmt: skip
    mx_hosts: tuple[str, ...] = ()
    try:
        mx_hosts = await discovery.lookup_mx(domain)
        matches = [f"{h} -> {', '.join(patterns_matching(policy.mx, h)) or 'NO MATCH'}"
                   for h in mx_hosts]  # fmt: skip
        out.step(f"MX {domain}", all(patterns_matching(policy.mx, h) for h in mx_hosts),
                 hosts=matches)  # fmt: skip
    except DnsLookupError as exc:
        out.step(f"MX {domain}", False, error=exc.reason)
    reply = render_policy_reply(policy, domain, sts_attributes=sts_attributes,
                                mx_hosts=mx_hosts or None)  # fmt: skip
    out.reply = reply.decode()
    return out
