"""The report: versions, machine, and the markdown table."""

from __future__ import annotations

import os
import platform
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

from stats import Summary

DISTRIBUTIONS = ("trio", "wsproto", "websockets", "trio-websocket", "trio_ws")


@dataclass(frozen=True)
class Row:
    implementation: str
    payload: str
    micros: Summary
    #: Paired ratios to the baseline (None for the baseline itself, or with no baseline).
    ratio: Summary | None
    #: Per round trip: client steps, client batches, server steps, server batches.
    steps: tuple[float | None, float | None, float | None, float | None]


def versions() -> str:
    found = [f"Python {platform.python_version()} ({platform.python_implementation()})"]
    for name in DISTRIBUTIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def machine() -> str:
    cpus = f"nproc {os.cpu_count()}"
    if hasattr(os, "sched_getaffinity"):
        cpus += f" ({len(os.sched_getaffinity(0))} usable)"
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                "",
            )
    except OSError:
        pass
    return ", ".join(part for part in (platform.platform(), cpus, model) if part)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(rows: Sequence[Row], baseline: str | None) -> str:
    versus = f"ratio vs {baseline}" if baseline else "ratio"
    lines = [
        f"| Implementation | Payload | µs per round trip | {versus} "
        "| task steps / rt (client · server) | batches / rt (client · server) |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for row in rows:
        if row.ratio is not None:
            ratio = row.ratio.format(2)
        else:
            ratio = "1 (baseline)" if row.implementation == baseline else "n/a"
        client_steps, client_batches, server_steps, server_batches = map(_number, row.steps)
        lines.append(
            f"| {row.implementation} | {row.payload} | {row.micros.format(1)} | {ratio} "
            f"| {client_steps} · {server_steps} | {client_batches} · {server_batches} |"
        )
    return "\n".join(lines)


def _notes(baseline: str | None) -> list[str]:
    base = baseline or "the baseline"
    paragraphs = [
        "Echo round trips with one message in flight: the client sends a message and waits "
        "for its echo. Client and server are the same library, each in its own process, "
        "over TCP on 127.0.0.1. Each cell is the median (interquartile range) over the "
        "rounds.",
        "- *µs per round trip*: per round, the time of the round's round trips divided by "
        "their number, measured in the client.",
        f"- *ratio*: per round, this implementation's time divided by {base}'s time in the "
        f"same round; > 1 means {base} is faster. Paired ratios cancel most of the "
        "machine's noise: compare these, not the absolute times.",
        "- *task steps*: trio task steps (`Instrument.before_task_step`) per round trip; "
        "*batches*: the scheduler's passes through its I/O wait (`before_io_wait`) per "
        "round trip. Both are counted in a separate, untimed run (the instrument costs "
        "time). They are deterministic except for timer wake-ups (delays, keepalives), "
        "which show as fractions.",
    ]
    lines = []
    for paragraph in paragraphs:
        indent = "  " if paragraph.startswith("- ") else ""
        lines.extend(textwrap.wrap(paragraph, 88, subsequent_indent=indent))
        if not indent:
            lines.append("")
    return lines


def document(
    rows: Sequence[Row],
    baseline: str | None,
    *,
    command: str,
    settings: str,
    wall_seconds: float,
) -> str:
    """The whole report, in markdown."""
    header = [
        f"- Command: `{command}`",
        f"- Settings: {settings}",
        f"- Versions: {versions()}",
        f"- Machine: {machine()}",
        f"- Wall time: {wall_seconds:.0f} s",
    ]
    return "\n".join([table(rows, baseline), "", *_notes(baseline), "", *header]) + "\n"
