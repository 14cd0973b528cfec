"""Reading wstest's reports and summarising them.

wstest writes ``index.json`` (agent -> case id -> ``behavior``,
``behaviorClose``, ``remoteCloseCode``, ``duration``, ``reportfile``) and one
JSON report per case, in its output directory.

Each case gets one verdict: its ``behavior`` when that is not acceptable,
else its ``behaviorClose`` when that is not, else its ``behavior``. A case
that was asked for but is not in the index gets ``MISSING``.
Acceptable: OK, NON-STRICT, INFORMATIONAL. UNIMPLEMENTED (what wstest says
of the compression cases 12.* and 13.* when no extension was negotiated) is
reported apart and fails the run only in strict mode.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCEPTED = ("OK", "NON-STRICT", "INFORMATIONAL")
UNIMPLEMENTED = "UNIMPLEMENTED"
MISSING = "MISSING"
#: Column order of the per-section table; other verdicts follow, sorted.
VERDICT_ORDER = (*ACCEPTED, UNIMPLEMENTED)


def case_key(case_id: str) -> tuple[int, ...]:
    """Sort key: ``"9.10.2"`` -> ``(9, 10, 2)``."""
    return tuple(int(part) for part in case_id.split("."))


def section_of(case_id: str) -> str:
    return case_id.split(".", 1)[0]


@dataclass
class CaseResult:
    case_id: str
    behavior: str
    behavior_close: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.behavior not in ACCEPTED:
            return self.behavior
        if self.behavior_close not in ACCEPTED:
            return self.behavior_close
        return self.behavior


@dataclass
class SideSummary:
    """The verdicts of one side (server or client) of the run."""

    side: str
    agent: str
    outdir: Path
    results: list[CaseResult]
    strict_unimplemented: bool
    wall_seconds: float = 0.0
    error: str | None = None

    def failures(self) -> list[CaseResult]:
        bad = [r for r in self.results if r.verdict not in ACCEPTED]
        if not self.strict_unimplemented:
            bad = [r for r in bad if r.verdict != UNIMPLEMENTED]
        return bad

    def unimplemented(self) -> list[CaseResult]:
        return [r for r in self.results if r.verdict == UNIMPLEMENTED]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failures()

    def counts(self) -> Counter[str]:
        return Counter(r.verdict for r in self.results)

    def section_counts(self) -> dict[str, Counter[str]]:
        sections: dict[str, Counter[str]] = {}
        for result in self.results:
            sections.setdefault(section_of(result.case_id), Counter())[result.verdict] += 1
        return dict(sorted(sections.items(), key=lambda item: int(item[0])))

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "reports": str(self.outdir),
            "ok": self.ok,
            "error": self.error,
            "wall_seconds": round(self.wall_seconds, 1),
            "cases": len(self.results),
            "counts": dict(sorted(self.counts().items())),
            "sections": {
                name: dict(sorted(c.items())) for name, c in self.section_counts().items()
            },
            "failures": [case_details(r) for r in self.failures()],
            "unimplemented": [r.case_id for r in self.unimplemented()],
        }


# -- loading -------------------------------------------------------------------


def load_results(outdir: Path, agent: str, requested: list[str]) -> list[CaseResult]:
    """Every requested case's result, in case order (``MISSING`` where absent)."""
    index_path = outdir / "index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    entries: dict[str, dict[str, Any]] = index.get(agent, {})
    ids = sorted(set(requested) | set(entries), key=case_key)
    results = []
    for case_id in ids:
        entry = entries.get(case_id)
        if entry is None:
            results.append(CaseResult(case_id, MISSING, MISSING))
            continue
        result = CaseResult(case_id, entry.get("behavior", "?"), entry.get("behaviorClose", "?"))
        if result.verdict not in ACCEPTED:
            result.report = _load_case_report(outdir, entry)
        results.append(result)
    return results


def _load_case_report(outdir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    name = entry.get("reportfile")
    if not name:
        return {}
    try:
        report: dict[str, Any] = json.loads((outdir / name).read_text())
    except (OSError, ValueError):
        return {}
    report.pop("wirelog", None)  # large; the HTML report shows it
    return report


# -- describing ----------------------------------------------------------------


def _plain(text: Any, limit: int = 400) -> str:
    """HTML-ish report text as one plain line."""
    flat = re.sub(r"<[^>]+>", " ", str(text or ""))
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def case_details(result: CaseResult) -> dict[str, Any]:
    """The facts worth knowing about a case that did not pass."""
    report = result.report
    details: dict[str, Any] = {
        "id": result.case_id,
        "verdict": result.verdict,
        "behavior": result.behavior,
        "behaviorClose": result.behavior_close,
    }
    if not report:
        return details
    details.update(
        description=_plain(report.get("description")),
        expectation=_plain(report.get("expectation")),
        result=_plain(report.get("result")),
        resultClose=_plain(report.get("resultClose")),
        wstestCloseCode=report.get("localCloseCode"),
        peerCloseCode=report.get("remoteCloseCode"),
        peerCloseReason=report.get("remoteCloseReason"),
        wasClean=report.get("wasClean"),
        wasNotCleanReason=report.get("wasNotCleanReason"),
        droppedByWstest=report.get("droppedByMe"),
        failedByWstest=report.get("failedByMe"),
        closeHandshakeTimeout=report.get("wasCloseHandshakeTimeout"),
        durationMs=report.get("duration"),
    )
    return details


def _columns(summaries: list[SideSummary]) -> list[str]:
    seen: set[str] = set()
    for summary in summaries:
        seen.update(summary.counts())
    extra = sorted(seen - set(VERDICT_ORDER))
    return [v for v in VERDICT_ORDER if v in seen or v == "OK"] + extra


def format_table(summary: SideSummary) -> str:
    columns = _columns([summary])
    widths = [max(len(c), 5) for c in columns]
    lines = ["section  " + "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    rows = [*summary.section_counts().items(), ("total", summary.counts())]
    for name, counts in rows:
        cells = [str(counts.get(c, "")).rjust(w) for c, w in zip(columns, widths, strict=True)]
        lines.append(f"{name:<7}  " + "  ".join(cells))
    return "\n".join(lines)


def format_failure(details: dict[str, Any]) -> str:
    lines = [f"  {details['id']}: {details['behavior']} / close {details['behaviorClose']}"]
    labels = (
        ("description", "what"),
        ("expectation", "expected"),
        ("result", "result"),
        ("resultClose", "close"),
    )
    for key, label in labels:
        if details.get(key):
            lines.append(f"      {label}: {details[key]}")
    if "wasClean" in details:
        lines.append("      " + _close_facts(details))
    return "\n".join(lines)


def _close_facts(details: dict[str, Any]) -> str:
    """What the report says about the close, in one line."""
    reason = details.get("peerCloseReason")
    ours = f"{details['peerCloseCode']}" + (f" {reason!r}" if reason else "")
    clean = "clean" if details["wasClean"] else f"unclean ({details['wasNotCleanReason']})"
    flags = [
        name
        for key, name in (
            ("droppedByWstest", "TCP dropped by wstest"),
            ("failedByWstest", "failed by wstest"),
            ("closeHandshakeTimeout", "close handshake timed out"),
        )
        if details.get(key)
    ]
    return (
        f"close codes: wstest sent {details['wstestCloseCode']}, trio_ws sent {ours}; {clean}; "
        + ", ".join([*flags, f"{details['durationMs']} ms"])
    )


def format_summary(summary: SideSummary) -> str:
    title = f"== {summary.side}: {len(summary.results)} cases, {summary.wall_seconds:.0f} s"
    parts = [title, f"   reports: {summary.outdir / 'index.html'}"]
    if summary.error:
        parts.append(f"   ERROR: {summary.error}")
    parts.append(format_table(summary))
    failures = summary.failures()
    if failures:
        parts.append(f"failing cases ({len(failures)}):")
        missing = [r.case_id for r in failures if r.verdict == MISSING]
        parts.extend(format_failure(case_details(r)) for r in failures if r.verdict != MISSING)
        if missing:
            parts.append(f"  MISSING (never reported by wstest): {', '.join(missing)}")
    unimplemented = summary.unimplemented()
    if unimplemented and not summary.strict_unimplemented:
        per_section = Counter(section_of(r.case_id) for r in unimplemented)
        where = ", ".join(f"{n} in {name}.*" for name, n in per_section.items())
        parts.append(f"UNIMPLEMENTED (tolerated; --strict-unimplemented fails them): {where}")
    parts.append("verdict: " + ("PASS" if summary.ok else "FAIL"))
    return "\n".join(parts)
