"""The parity gate's reports: machine JSON, a Markdown step summary, JUnit XML and one repro page per failure.

:func:`write_reports` renders a :class:`~conformance.verdicts.GateResult` into a report
directory (``reports/parity/`` by convention)::

    parity.json                  result.to_json_dict() + a "report" block (counts, artifact paths);
                                 valid against specs/parity-report.schema.json
    summary.md                   for $GITHUB_STEP_SUMMARY (< 1 MiB): headline, scenario x stage table,
                                 one collapsed <details> block per failure, expected failures listed
    junit.xml                    one testcase per scenario x stage that the scenario runs
    repro/<scenario>__<stage>.md one per failing verdict: the one-line rerun command, what failed, the numbers
    heatmaps/<scenario>__<stage>.png
                                 worst |diff| slice of the most-mismatched failing array check (<= ~30 kB;
                                 for the first MAX_HEATMAPS failures)

Every file is written atomically (:mod:`ptycho.atomic`); repro pages and heatmaps left
by an earlier run that this run did not produce are removed.  The output depends only
on the result: apart from the timing fields (``seconds``, ``started``) two runs with
the same verdicts give byte-identical reports.  NumPy, matplotlib (Agg) and Pillow only;
no TensorFlow or PyTorch.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conformance.verdicts import STATUSES, Comparison, GateResult, Verdict
from ptycho.atomic import atomic_write_bytes

__all__ = ["MAX_HEATMAPS", "REPORT_SCHEMA", "STATUS_SYMBOLS", "SUMMARY_LIMIT_BYTES", "write_reports"]

#: Identifies the layout of parity.json (the "schema" key; also the schema's const).
REPORT_SCHEMA = "ptychopinn.conformance.parity-report/1"
#: GitHub rejects step summaries over 1 MiB; summary.md stays below this.
SUMMARY_LIMIT_BYTES = 1024 * 1024
#: One symbol per verdict status in the Markdown table.
STATUS_SYMBOLS: dict[str, str] = {
    "pass": "✅",
    "fail": "❌",
    "xpass": "⁉️",
    "error": "💥",
    "xfail": "⚠️",
    "not_run": "—",
}
_STATUS_WORDS: dict[str, str] = {
    "pass": "passed",
    "fail": "failed",
    "xpass": "unexpectedly passed (strict expected failure)",
    "error": "crashed / errored",
    "xfail": "expected failure",
    "not_run": "not run (the scenario does not list the stage)",
}
_HEADLINE_ORDER = ("pass", "fail", "error", "xpass", "xfail", "not_run")

# Size limits of the Markdown summary, so that even thousands of failures stay under 1 MiB.
_SUMMARY_BUDGET = SUMMARY_LIMIT_BYTES - 48 * 1024  # room for the closing lines
_TABLE_BUDGET = SUMMARY_LIMIT_BYTES // 3
_MAX_CHECK_ROWS = 8  # failing checks tabulated per failure in the summary
_MAX_MESSAGES = 4  # check messages quoted per failure in the summary
_MESSAGE_CHARS = 700
_STDERR_CHARS_SUMMARY = 3000
_SUMMARY_CHARS = 160  # the one-line <summary> of a <details> block

# Heatmaps: small enough that a report with dozens of failures stays a few MB.
_HEATMAP_MAX_SIDE = 96  # larger slices are max-pooled (keeps the worst values visible)
_HEATMAP_PLOT_PX = 192  # the image is upscaled (nearest) to about this many pixels per side
_HEATMAP_MIN_ROWS_PX = 16  # a 1-D strip is drawn at least this tall
_HEATMAP_LEVELS = 253  # colour-map levels; palette entries 253-255 are white, black, cyan
_WHITE, _BLACK, _CYAN = 253, 254, 255
#: At most this many heatmaps per report (the first failures in table order): a badly broken run (a
#: mutant) can fail thousands of verdicts, and the report must stay cheap and small.
MAX_HEATMAPS = 40

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class _Failure:
    """A failing verdict and the artifacts written for it (paths relative to the report dir)."""

    verdict: Verdict
    repro: str
    heatmap: str | None
    heatmap_check: Comparison | None


# --------------------------------------------------------------------------------------------- helpers


def _clean(text: str | None) -> str:
    """Text without ANSI colour codes or characters XML cannot hold."""
    return _XML_ILLEGAL.sub("", _ANSI.sub("", text or ""))


def _slug(text: str) -> str:
    """A file-name-safe form of ``text``; a short hash is appended when characters had to be replaced."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    if slug != text:
        slug += "-" + hashlib.sha1(text.encode()).hexdigest()[:6]
    return slug


def _stem(verdict: Verdict) -> str:
    return f"{_slug(verdict.scenario)}__{_slug(verdict.stage)}"


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _shorten(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _one_line(text: str, limit: int) -> str:
    return _shorten(" ".join(text.split()), limit)


def _fence(text: str, lang: str = "text") -> str:
    """``text`` in a fenced code block whose fence is longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _failing_checks(verdict: Verdict) -> list[Comparison]:
    return [c for c in verdict.checks if not c.passed]


def _location(check: Comparison) -> str:
    return ", ".join(str(loc) for loc in check.mismatch_locations[:3]) or "—"


def _check_table(checks: list[Comparison], limit: int | None) -> str:
    shown = checks if limit is None else checks[:limit]
    lines = [
        "| tensor | pair | mismatches | max abs | max rel | rtol | atol | first mismatches | non-finite |",
        "|---|---|--:|--:|--:|--:|--:|---|---|",
    ]
    for c in shown:
        lines.append(
            f"| `{_cell(c.tensor)}` | {_cell(c.pair)} | {c.n_mismatch}/{c.n_total} | {_fmt(c.max_abs)} | "
            f"{_fmt(c.max_rel)} | {c.rtol:.3g} | {c.atol:.3g} | {_cell(_location(c))} | {_cell(c.nonfinite or '—')} |"
        )
    if len(checks) > len(shown):
        lines.append(f"\n…and {len(checks) - len(shown)} more failing checks (see the repro page / parity.json).")
    return "\n".join(lines)


def _worst_check(checks: list[Comparison]) -> Comparison | None:
    """The most broken check: the largest mismatch fraction, then the largest max abs error."""
    return max(checks, key=lambda c: (c.n_mismatch / max(c.n_total, 1), c.max_abs or 0.0), default=None)


def _check_brief(check: Comparison) -> str:
    """``tensor [pair]: n/total mismatched, max abs .., max rel ..`` in one short line."""
    text = f"{check.tensor} [{check.pair}]: {check.n_mismatch}/{check.n_total} mismatched"
    if check.max_abs is not None:
        text += f", max abs {_fmt(check.max_abs)}, max rel {_fmt(check.max_rel)}"
    if check.nonfinite:
        text += f", non-finite: {check.nonfinite}"
    return text


def _verdict_note(verdict: Verdict) -> str:
    """The verdict's message when it says more than its failing checks' messages (which are shown anyway)."""
    rest = verdict.message
    for check in _failing_checks(verdict):
        rest = rest.replace(check.message, "")
    rest = re.sub(r"(\.\.\.|…)?\s*and \d+ more failing checks", "", rest)  # the check table counts them
    return _clean(verdict.message) if re.search(r"[A-Za-z0-9]", rest) else ""


def _what_failed(verdict: Verdict) -> str:
    """One line: what kind of failure this is and how many checks it involves."""
    failing = _failing_checks(verdict)
    if verdict.status == "error":
        return "the worker raised or crashed"
    if verdict.status == "xpass":
        return f"strict expected failure matched nothing (reason given: {verdict.expected_failure or 'none'})"
    if failing:
        return f"{len(failing)} of {len(verdict.checks)} checks failed"
    return "failed"


# --------------------------------------------------------------------------------------------- heatmap


def _heatmap_check(verdict: Verdict) -> Comparison | None:
    """The failing check to picture: the largest mismatch fraction, then the largest max abs error."""
    return _worst_check([c for c in _failing_checks(verdict) if c.worst is not None and np.asarray(c.worst).size > 1])


def _max_pool(a: np.ndarray, side: int) -> tuple[np.ndarray, int]:
    """``a`` max-pooled so that no side exceeds ``side``; returns the pooled array and the factor."""
    factor = int(np.ceil(max(a.shape) / side))
    if factor <= 1:
        return a, 1
    h, w = (-(-a.shape[0] // factor)) * factor, (-(-a.shape[1] // factor)) * factor
    padded = np.zeros((h, w), dtype=a.dtype)
    padded[: a.shape[0], : a.shape[1]] = a
    return padded.reshape(h // factor, factor, w // factor, factor).max(axis=(1, 3)), factor


def _heatmap_png(check: Comparison, caption: tuple[str, str]) -> bytes:
    """A small palette PNG of the check's worst ``|diff|`` slice: two caption lines, the image
    (matplotlib's magma colour map, nearest-neighbour upscaled), a colour bar from 0 to the max,
    and a cyan box around the worst pixel.

    Drawn with Pillow directly (a matplotlib figure took ~0.2 s each; this takes a few ms)
    and stored as an 8-bit palette PNG, a few kB.  Deterministic for a given Pillow version.
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    diff = np.nan_to_num(np.abs(np.asarray(check.worst, dtype=np.float64)), nan=0.0, posinf=0.0)
    if diff.ndim != 2:
        diff = diff.reshape(1, -1)
    pooled, factor = _max_pool(diff, _HEATMAP_MAX_SIDE)
    vmax = float(pooled.max())
    levels = _HEATMAP_LEVELS - 1
    index = np.zeros(pooled.shape, np.uint8) if vmax <= 0 else np.rint(pooled / vmax * levels).astype(np.uint8)
    h, w = pooled.shape
    sx = max(1, _HEATMAP_PLOT_PX // w)
    sy = max(1, _HEATMAP_PLOT_PX // h, -(-_HEATMAP_MIN_ROWS_PX // h)) if h < w else sx
    plot = np.repeat(np.repeat(index, sy, axis=0), sx, axis=1)
    font = ImageFont.load_default()
    top, left, bar = 32, 6, 10
    ph, pw = plot.shape
    width, height = max(left + pw + 8 + bar + 56, 264), top + max(ph, 64) + 18
    canvas = np.full((height, width), _WHITE, np.uint8)
    canvas[top : top + ph, left : left + pw] = plot
    bar_x = left + pw + 8
    ramp = np.linspace(levels, 0, max(ph, 64)).round().astype(np.uint8)
    canvas[top : top + ramp.size, bar_x : bar_x + bar] = ramp[:, None]
    magma = (np.asarray(colormaps["magma"].resampled(_HEATMAP_LEVELS)(np.arange(_HEATMAP_LEVELS)))[:, :3] * 255)
    palette = np.vstack([magma.round(), [[255, 255, 255], [0, 0, 0], [0, 255, 255]]]).astype(np.uint8)
    image = Image.fromarray(canvas, mode="P")
    image.putpalette(palette.ravel().tolist())
    draw = ImageDraw.Draw(image)
    y, x = np.unravel_index(int(np.argmax(pooled)), pooled.shape)
    box = (left + x * sx - 2, top + y * sy - 2, left + (x + 1) * sx + 1, top + (y + 1) * sy + 1)
    draw.rectangle(box, outline=_CYAN)

    def fit(text: str) -> str:
        while len(text) > 4 and draw.textlength(text, font=font) > width - 8:
            text = text[:-2] + "…"
        return text

    draw.text((4, 3), fit(caption[0]), fill=_BLACK, font=font)
    draw.text((4, 16), fit(caption[1]), fill=_BLACK, font=font)
    draw.text((bar_x + bar + 4, top - 2), f"{vmax:.3g}", fill=_BLACK, font=font)
    draw.text((bar_x + bar + 4, top + ramp.size - 10), "0", fill=_BLACK, font=font)
    pooled_note = f", max-pooled {factor}x" if factor > 1 else ""
    where = f"[{int(y) * factor}, {int(x) * factor}]" if factor > 1 else f"[{int(y)}, {int(x)}]"
    footer = f"|a-b| {list(diff.shape)}{pooled_note}; box: max at {where}"
    draw.text((4, height - 14), fit(footer), fill=_BLACK, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


# --------------------------------------------------------------------------------------------- repro page


def _repro_page(result: GateResult, failure: _Failure) -> str:
    v = failure.verdict
    failing = _failing_checks(v)
    parts = [
        f"# {STATUS_SYMBOLS[v.status]} {v.scenario} / {v.stage}: {_STATUS_WORDS[v.status]}",
        "",
        "Rerun exactly this case:",
        "",
        _fence(_clean(v.repro), "bash"),
        "",
        f"**What failed:** {_what_failed(v)}.",
        "",
    ]
    if _verdict_note(v):
        parts += [_fence(_verdict_note(v)), ""]
    if v.expected_failure:
        parts += [f"**Expected-failure entry:** {v.expected_failure}", ""]
    if failing:
        parts += ["## Failing checks", "", _check_table(failing, None), "", "## Messages", ""]
        parts += [_fence("\n\n".join(_clean(c.message) for c in failing)), ""]
    if failure.heatmap and failure.heatmap_check is not None:
        parts += [
            "## Worst difference",
            "",
            f"![|a-b| of {failure.heatmap_check.tensor} [{failure.heatmap_check.pair}]](../{failure.heatmap})",
            "",
        ]
    if v.stderr_tail:
        parts += ["## stderr (tail)", "", _fence(_clean(v.stderr_tail)), ""]
    passed = len(v.checks) - len(failing)
    parts += [
        "## Context",
        "",
        f"- checks passing in this stage: {passed} of {len(v.checks)}",
        f"- gate command: `{_clean(result.command)}`" + (f" (mutant `{result.mutant}`)" if result.mutant else ""),
        "- versions: " + (", ".join(f"{k} {val}" for k, val in sorted(result.versions.items())) or "—"),
        "",
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------- summary.md


def _headline(result: GateResult, counts: dict[str, int]) -> list[str]:
    """The verdict line, the counts with the gate time, and a small line of provenance."""
    if result.ok:
        head = "## ✅ Parity gate passed"
    else:
        bad = [f"{counts[s]} {_STATUS_WORDS[s].split(' (')[0]}" for s in ("fail", "error", "xpass") if counts[s]]
        head = f"## ❌ Parity gate FAILED: {' · '.join(bad)}"
    ran = sum(n for status, n in counts.items() if status != "not_run")
    tally = " · ".join(
        f"{STATUS_SYMBOLS[s]} {counts[s]} {_STATUS_WORDS[s].split(' (')[0]}"
        for s in _HEADLINE_ORDER
        if counts[s] or s == "pass"
    )
    scope = (
        f"**{ran} verdicts**, {len(result.scenarios)} scenarios × {len(result.stages)} stages, "
        f"gate time {_duration(result.seconds)}: {tally}"
    )
    meta = [f"`{_clean(result.command)}`", f"started {result.started}"]
    if result.mutant:
        meta.append(f"**mutant `{result.mutant}`**")
    meta += [f"{k} {val}" for k, val in sorted(result.versions.items())]
    return [head, "", scope, "", "<sub>" + html.escape(" · ".join(meta), quote=False) + "</sub>", ""]


def _table(result: GateResult, cells: dict[tuple[str, str], Verdict]) -> list[str]:
    def row_symbols(sid: str) -> list[str]:
        return [STATUS_SYMBOLS[cells[(sid, st)].status] if (sid, st) in cells else "—" for st in result.stages]

    def clean_row(sid: str) -> bool:
        return all(cells[(sid, st)].status in ("pass", "not_run") for st in result.stages if (sid, st) in cells)

    header = ["| scenario | " + " | ".join(result.stages) + " |", "|---|" + ":-:|" * len(result.stages)]
    rows = [f"| {_cell(sid)} | " + " | ".join(row_symbols(sid)) + " |" for sid in result.scenarios]
    size = sum(len(r.encode()) + 1 for r in rows)
    note = []
    if size > _TABLE_BUDGET:
        hidden = [sid for sid in result.scenarios if clean_row(sid)]
        rows = [f"| {_cell(sid)} | " + " | ".join(row_symbols(sid)) + " |" for sid in result.scenarios
                if not clean_row(sid)]
        note.append(f"{len(hidden)} scenarios whose every stage passed are not listed (too many rows).")
    kept, used = [], 0
    for row in rows:
        used += len(row.encode()) + 1
        if used > _TABLE_BUDGET:
            note.append(f"{len(rows) - len(kept)} more rows cut to keep this page under 1 MiB; see parity.json.")
            break
        kept.append(row)
    lines = header + kept
    if not result.ok:
        per_stage = [
            sum(1 for sid in result.scenarios if (sid, st) in cells and cells[(sid, st)].failing)
            for st in result.stages
        ]
        lines.append("| **failing** | " + " | ".join(f"**{n}**" if n else "0" for n in per_stage) + " |")
    legend = "Legend: " + " · ".join(f"{STATUS_SYMBOLS[s]} {_STATUS_WORDS[s]}" for s in STATUSES)
    return ["### Scenario × stage", "", *lines, "", *[f"_{n}_" for n in note], legend, ""]


def _failure_block(failure: _Failure) -> str:
    v = failure.verdict
    failing = _failing_checks(v)
    worst = _worst_check(failing)
    if worst is not None:
        summary = " · worst: " + html.escape(_one_line(_check_brief(worst), _SUMMARY_CHARS), quote=False)
    elif v.status == "xpass":
        summary = ": fixed? then remove the stale entry"
    else:
        summary = " · " + html.escape(_one_line(_clean(v.message), _SUMMARY_CHARS), quote=False)
    parts = [
        "<details>",
        f"<summary>{STATUS_SYMBOLS[v.status]} <b>{html.escape(v.scenario)}</b> / <b>{html.escape(v.stage)}</b>: "
        f"{html.escape(_what_failed(v), quote=False)}{summary}</summary>",
        "",
        f"Rerun: `{_clean(v.repro)}` · [repro page]({failure.repro})",
        "",
    ]
    if _verdict_note(v):
        parts += [_fence(_shorten(_verdict_note(v), _MESSAGE_CHARS)), ""]
    if failing:
        parts += [_check_table(failing, _MAX_CHECK_ROWS), ""]
        quoted = [_shorten(_clean(c.message), _MESSAGE_CHARS) for c in failing[:_MAX_MESSAGES]]
        parts += [_fence("\n\n".join(quoted)), ""]
    if failure.heatmap and failure.heatmap_check is not None:
        c = failure.heatmap_check
        parts += [f"Heatmap of the worst |a-b|, `{c.tensor}` [{c.pair}]: [{failure.heatmap}]({failure.heatmap}) "
                  "(in the reports artifact)", ""]
    if v.stderr_tail:
        tail = _clean(v.stderr_tail)
        if len(tail) > _STDERR_CHARS_SUMMARY:
            tail = "…" + tail[-_STDERR_CHARS_SUMMARY:]
        parts += ["stderr (tail):", "", _fence(tail), ""]
    parts += ["</details>", ""]
    return "\n".join(parts)


def _summary(result: GateResult, failures: list[_Failure]) -> str:
    counts = result.counts()
    cells = {(v.scenario, v.stage): v for v in result.verdicts}
    parts = _headline(result, counts) + _table(result, cells)
    used = sum(len(p.encode()) + 1 for p in parts)
    if failures:
        parts += [f"### Failures ({len(failures)})", ""]
        shown = 0
        for failure in failures:
            block = _failure_block(failure)
            used += len(block.encode()) + 1
            if used > _SUMMARY_BUDGET:
                break
            parts.append(block)
            shown += 1
        if shown < len(failures):
            rest = failures[shown:]
            parts.append(f"…and {len(rest)} more failures not shown here (size limit); each has a repro page:")
            listing = ", ".join(f"[{f.verdict.scenario}/{f.verdict.stage}]({f.repro})" for f in rest)
            parts += ["", _shorten(listing, 16 * 1024), ""]
    xfails = [v for v in result.verdicts if v.status == "xfail"]
    if xfails:
        plural = "s" if len(xfails) > 1 else ""
        parts += [f"<details><summary>{STATUS_SYMBOLS['xfail']} {len(xfails)} expected failure{plural} "
                  "(waived, with reasons)</summary>", ""]
        lines = [f"- {_cell(v.scenario)} / {v.stage}: {_one_line(_clean(v.expected_failure or '(no reason)'), 300)}"
                 for v in xfails]
        listing = "\n".join(lines)
        if len(listing.encode()) > 16 * 1024:
            listing = _shorten(listing, 16 * 1024) + "\n\n(list cut; see parity.json)"
        parts += [listing, "", "</details>", ""]
    parts.append("Full details: `parity.json`, `junit.xml`, `repro/` in the reports artifact.")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------- junit.xml


def _junit(result: GateResult, failures: dict[tuple[str, str], _Failure]) -> bytes:
    cases = [v for v in result.verdicts if v.status != "not_run"]
    counts = result.counts()
    n_fail, n_err, n_skip = counts["fail"] + counts["xpass"], counts["error"], counts["xfail"]
    totals = {
        "tests": str(len(cases)),
        "failures": str(n_fail),
        "errors": str(n_err),
        "skipped": str(n_skip),
        "time": f"{result.seconds:.3f}",
    }
    root = ET.Element("testsuites", {"name": "conformance parity gate", **totals})
    suite = ET.SubElement(root, "testsuite", {"name": "conformance", **totals, "timestamp": result.started})
    props = ET.SubElement(suite, "properties")
    entries = [("command", result.command), ("mutant", result.mutant or "")]
    entries += [(f"version.{k}", val) for k, val in sorted(result.versions.items())]
    for name, value in entries:
        ET.SubElement(props, "property", {"name": name, "value": _clean(value)})
    for v in cases:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"conformance.{v.scenario}", "name": v.stage, "time": f"{v.seconds:.3f}"},
        )
        failing = _failing_checks(v)
        body = "\n\n".join(_clean(c.message) for c in failing) or _clean(v.message)
        headline = _one_line(_clean(failing[0].message if failing else v.message) or _what_failed(v), 500)
        if v.status == "fail":
            ET.SubElement(case, "failure", {"type": "parity-mismatch", "message": headline}).text = body
        elif v.status == "xpass":
            message = _one_line(f"{_what_failed(v)}; {_clean(v.message)}", 500)
            ET.SubElement(case, "failure", {"type": "unexpected-pass", "message": message}).text = _clean(v.message)
        elif v.status == "error":
            ET.SubElement(case, "error", {"type": "worker-error", "message": headline}).text = (
                _clean(v.message) + ("\n\nstderr (tail):\n" + _clean(v.stderr_tail) if v.stderr_tail else "")
            )
        elif v.status == "xfail":
            reason = _one_line(_clean(v.expected_failure or "(no reason)"), 500)
            ET.SubElement(case, "skipped", {"type": "xfail", "message": f"expected failure: {reason}"})
        out = f"repro: {_clean(v.repro)}"
        if (v.scenario, v.stage) in failures:
            out += f"\nrepro page: {failures[(v.scenario, v.stage)].repro}"
        ET.SubElement(case, "system-out").text = out
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


# --------------------------------------------------------------------------------------------- parity.json


def _json_doc(result: GateResult, failures: list[_Failure]) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": REPORT_SCHEMA, **result.to_json_dict()}
    doc["report"] = {
        "generator": "conformance.report",
        "counts": result.counts(),
        "files": {"summary": "summary.md", "junit": "junit.xml"},
        "failures": [
            {
                "scenario": f.verdict.scenario,
                "stage": f.verdict.stage,
                "status": f.verdict.status,
                "repro": f.repro,
                "heatmap": f.heatmap,
                "heatmap_tensor": None if f.heatmap_check is None else f.heatmap_check.tensor,
            }
            for f in failures
        ],
    }
    return doc


def _json_text(doc: dict[str, Any]) -> str:
    """parity.json's text: one top-level key per line and one verdict per line.

    Line-oriented so two runs diff verdict by verdict, and each line goes through the
    C JSON encoder (``indent`` would force the slow pure-Python one on large gates).
    """

    def enc(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)

    lines = []
    for key, value in doc.items():
        if key == "verdicts" and value:
            body = ",\n".join(f"    {enc(v)}" for v in value)
            lines.append(f"  {enc(key)}: [\n{body}\n  ]")
        else:
            lines.append(f"  {enc(key)}: {enc(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


# --------------------------------------------------------------------------------------------- entry point


def _prune(directory: Path, pattern: str, keep: set[Path]) -> None:
    """Remove files matching ``pattern`` in ``directory`` that this run did not write; drop it if empty."""
    if not directory.is_dir():
        return
    for stale in directory.glob(pattern):
        if stale not in keep:
            stale.unlink()
    if not any(directory.iterdir()):
        directory.rmdir()


def write_reports(result: GateResult, report_dir: Path) -> dict[str, Path]:
    """Write every report of ``result`` into ``report_dir`` (created if missing).

    Returns ``{path relative to report_dir: path}`` for each file written: ``parity.json``,
    ``summary.md``, ``junit.xml``, and per failing verdict (status fail, xpass or
    error) ``repro/<scenario>__<stage>.md`` plus, where a failing check carries an
    array slice, ``heatmaps/<scenario>__<stage>.png``.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def put(rel: str, data: bytes) -> None:
        path = report_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        written[rel] = atomic_write_bytes(path, data)

    order = {(sid, st): (i, j) for i, sid in enumerate(result.scenarios) for j, st in enumerate(result.stages)}
    failing = sorted(
        (v for v in result.verdicts if v.failing),
        key=lambda v: (order.get((v.scenario, v.stage), (len(order), 0)), v.scenario, v.stage),
    )
    failures: list[_Failure] = []
    n_heatmaps = 0
    for v in failing:
        stem = _stem(v)
        check = _heatmap_check(v) if n_heatmaps < MAX_HEATMAPS else None
        heatmap = None
        if check is not None:
            heatmap = f"heatmaps/{stem}.png"
            put(heatmap, _heatmap_png(check, (f"{v.scenario} / {v.stage}", f"{check.tensor} [{check.pair}]")))
            n_heatmaps += 1
        failures.append(_Failure(v, f"repro/{stem}.md", heatmap, check))
    for failure in failures:
        put(failure.repro, _repro_page(result, failure).encode())

    doc = _json_doc(result, failures)
    put("parity.json", _json_text(doc).encode())
    put("summary.md", _summary(result, failures).encode())
    put("junit.xml", _junit(result, {(f.verdict.scenario, f.verdict.stage): f for f in failures}))

    keep = set(written.values())
    _prune(report_dir / "repro", "*.md", keep)
    _prune(report_dir / "heatmaps", "*.png", keep)
    return written
