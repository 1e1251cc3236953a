"""The release calendar as a picture: a standalone SVG of a year's plan and what shipped.

Operators read the calendar to know when machines restart. The picture follows
the shape of Microsoft's sample hotpatch schedule: the twelve months in calendar
order, one row per quarter, each month coloured and labelled by what it is (a
baseline that restarts, a hotpatch that does not, an unplanned baseline that took
a hotpatch month's place), with the KB ids that actually shipped written over the
plan. Months where nothing has shipped yet show the plan faintly.

The output is deterministic (same entries, same bytes), self-contained (no fonts,
images, styles or scripts from elsewhere) and accessible: it has a title and a
description summarising the year, and every kind is said in words, not by colour
alone.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pyhotpatch.catalog._calendar import (
    HOTPATCH,
    PLANNED_BASELINE,
    UNPLANNED_BASELINE,
    MonthEntry,
)
from pyhotpatch.catalog._model import Kind, Release, utc
from pyhotpatch.errors import CatalogError

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
CAPTION = "Patch Tuesday dates in UTC"
MAX_KBS = 3  # KB ids listed in a month before "+N more"

# the page: 3 months a row (one quarter), 4 rows
WIDTH = 1000
MARGIN = 24
ROW_LABEL = 40  # room left of the grid for "Q1".."Q4"
COLUMNS = 3
GAP = 12
CELL_W = (WIDTH - 2 * MARGIN - ROW_LABEL - (COLUMNS - 1) * GAP) // COLUMNS
CELL_H = 164
GRID_TOP = 146
ROWS = 12 // COLUMNS
HEIGHT = GRID_TOP + ROWS * CELL_H + (ROWS - 1) * GAP + MARGIN + 8
PAD = 14  # inside a cell


@dataclass(frozen=True)
class _Style:
    """How one month kind is drawn; every text colour on it has a contrast of 5.4:1 or more."""

    label: str
    ink: str  # badge fill and border; dark enough for white text on it
    tint: str  # cell fill when releases shipped
    faint: str  # cell fill when only planned


_STYLES = {
    PLANNED_BASELINE: _Style("Baseline \u00b7 restart", "#1d4f91", "#e4edf8", "#f6f9fd"),
    HOTPATCH: _Style("Hotpatch \u00b7 no restart", "#1e6b3a", "#e3f3e8", "#f6fbf7"),
    UNPLANNED_BASELINE: _Style(
        "Unplanned baseline \u00b7 restart", "#a4262c", "#fbe5e6", "#fdf5f5"
    ),
}
_TEXT = "#1b1f24"
_MUTED = "#4b5563"  # 7.5:1 on white, 6.2:1 or better on the tints
_KIND_WORDS = {
    Kind.PLANNED_BASELINE: "baseline",
    Kind.UNPLANNED_BASELINE: "unplanned baseline",
    Kind.HOTPATCH: "hotpatch",
    Kind.OTHER_UPDATE: "update",
}
# English names, not calendar.month_name: those follow the locale, and the bytes must not
_MONTHS = (
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_ABBR = tuple(name[:3] for name in _MONTHS)
_NARROW = " .,:;'!|il\u00b7"
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# characters XML 1.0 does not allow at all; dropped from titles and names
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _esc(text: str) -> str:
    """``text`` safe inside XML character data and double-quoted attributes."""
    text = _NOT_XML.sub("", text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _text_width(text: str, size: float, bold: bool = False) -> int:
    """A generous estimate of rendered width, enough to place text without knowing the font.

    Sized for wide fallbacks such as DejaVu Sans; narrower fonts leave a little air.
    """
    ems = sum(
        0.68 if char.isupper() or char.isdigit() else 0.32 if char in _NARROW else 0.62
        for char in text
    )
    return round(ems * size * (1.1 if bold else 1.0))


def _day(moment: datetime.date) -> str:
    """``Tue 13 Jan`` for a date, in English whatever the locale."""
    return f"{_WEEKDAYS[moment.weekday()]} {moment.day} {_MONTH_ABBR[moment.month]}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _describe(year: int, entries: Sequence[MonthEntry]) -> str:
    """The ``<desc>``: the year's counts in words, for readers who cannot see the picture."""

    def names(kind: str) -> list[str]:
        return [_MONTHS[e.month] for e in entries if e.kind == kind]

    planned, hotpatch, unplanned = (
        names(PLANNED_BASELINE),
        names(HOTPATCH),
        names(UNPLANNED_BASELINE),
    )
    released = sum(len(e.releases) for e in entries)
    parts = [
        f"{_plural(len(planned), 'planned baseline')} ({', '.join(planned) or 'none'}), "
        "each needing a restart",
        f"{_plural(len(hotpatch), 'hotpatch month')}, needing no restart",
    ]
    if unplanned:
        parts.append(
            f"{_plural(len(unplanned), 'unplanned baseline')} ({', '.join(unplanned)}), "
            "each replacing that month's hotpatch and needing a restart"
        )
    else:
        parts.append("no unplanned baselines")
    empty = [_MONTHS[e.month] for e in entries if not e.releases]
    shipped = f"{_plural(released, 'release')} shipped"
    if empty and len(empty) < 12:
        shipped += f"; nothing shipped yet in {', '.join(empty)}"
    return f"{year}: " + "; ".join(parts) + f". {shipped}. {CAPTION}."


def _release_line(release: Release) -> str:
    """The hover text of one release: what it is, in full."""
    shipped = utc(release.available or release.published).strftime("%Y-%m-%d")
    return f"{release.kb} ({_KIND_WORDS[release.kind]}, {release.severity}): {release.title}, {shipped}"


def _badge(x: int, y: int, label: str, style: _Style, solid: bool) -> list[str]:
    width = _text_width(label, 12, bold=True) + 20
    fill, ink = (style.ink, "#ffffff") if solid else ("#ffffff", style.ink)
    return [
        f'<rect x="{x}" y="{y}" width="{width}" height="22" rx="11" fill="{fill}" '
        f'stroke="{style.ink}" stroke-width="1.5"/>',
        f'<text x="{x + 10}" y="{y + 15}" font-size="12" font-weight="600" fill="{ink}">'
        f"{_esc(label)}</text>",
    ]


def _marker(x: int, y: int, ink: str) -> list[str]:
    """A warning triangle with ``!``, drawn so it needs no symbol font."""
    return [
        f'<path d="M{x + 8} {y} L{x + 16} {y + 14} L{x} {y + 14} Z" fill="{ink}"/>',
        f'<text x="{x + 8}" y="{y + 12.5}" font-size="10" font-weight="700" fill="#ffffff" '
        f'text-anchor="middle">!</text>',
    ]


def _cell(entry: MonthEntry, x: int, y: int) -> list[str]:
    style = _STYLES.get(entry.kind)
    if style is None:
        raise CatalogError(f"month {entry.month} has unknown kind {entry.kind!r}")
    shipped = bool(entry.releases)
    month_name = _MONTHS[entry.month]
    summary = f"{month_name}: {style.label}, {_plural(len(entry.releases), 'release')}"
    strip_opacity = "" if shipped else ' fill-opacity="0.45"'
    border = (
        f'stroke="{style.ink}" stroke-width="{2.5 if entry.kind == UNPLANNED_BASELINE else 1.5}"'
        if shipped
        else f'stroke="{style.ink}" stroke-width="1.5" stroke-dasharray="6 4" stroke-opacity="0.75"'
    )
    out = [
        f'<g data-month="{entry.month}" data-kind="{entry.kind}" '
        f'data-releases="{len(entry.releases)}" data-date="{entry.date.isoformat()}">',
        f"<title>{_esc(summary)}</title>",
        f'<rect x="{x}" y="{y}" width="{CELL_W}" height="{CELL_H}" rx="8" '
        f'fill="{style.tint if shipped else style.faint}" {border}/>',
        # a strip down the left edge in the kind's colour; the text says the kind too
        f'<rect x="{x}" y="{y}" width="6" height="{CELL_H}" rx="3" fill="{style.ink}"'
        f"{strip_opacity}/>",
        f'<text x="{x + PAD + 4}" y="{y + 27}" font-size="17" font-weight="700" '
        f'fill="{_TEXT}">{month_name}</text>',
        f'<text x="{x + CELL_W - PAD}" y="{y + 27}" font-size="13" fill="{_MUTED}" '
        f'text-anchor="end">{_day(entry.date)}</text>',
    ]
    out += _badge(x + PAD + 4, y + 38, style.label, style, solid=shipped)
    status_y = y + 80
    line_y = status_y  # the KB list moves down when a status line takes this place
    if entry.kind == UNPLANNED_BASELINE:
        out += _marker(x + PAD + 4, status_y - 12, style.ink)
        out.append(
            f'<text x="{x + PAD + 26}" y="{status_y}" font-size="12" font-weight="600" '
            f'fill="{style.ink}">'
            "Replaced this month's hotpatch</text>"
        )
        line_y += 22
    elif not shipped:
        out.append(
            f'<text x="{x + PAD + 4}" y="{status_y}" font-size="12" font-style="italic" '
            f'fill="{_MUTED}">Planned \u00b7 nothing shipped yet</text>'
        )
    for release in entry.releases[:MAX_KBS]:
        kb_x = x + PAD + 4
        kind_x = kb_x + _text_width(release.kb, 13, bold=True) + 6
        when = utc(release.available or release.published)
        out += [
            "<g>",
            f"<title>{_esc(_release_line(release))}</title>",
            f'<text x="{kb_x}" y="{line_y}" font-size="13" font-weight="700" '
            f'fill="{_TEXT}">{_esc(release.kb)}</text>',
            f'<text x="{kind_x}" y="{line_y}" font-size="12" fill="{_MUTED}">'
            f"{_esc(_KIND_WORDS[release.kind])}</text>",
            f'<text x="{x + CELL_W - PAD}" y="{line_y}" font-size="12" fill="{_MUTED}" '
            f'text-anchor="end">{when.day} {_MONTH_ABBR[when.month]}</text>',
            "</g>",
        ]
        line_y += 19
    hidden = len(entry.releases) - MAX_KBS
    if hidden > 0:
        out.append(
            f'<text x="{x + PAD + 4}" y="{line_y}" font-size="12" font-weight="600" '
            f'fill="{_MUTED}">+{hidden} more</text>'
        )
    out.append("</g>")
    return out


def _legend(y: int) -> list[str]:
    """Two rows: what each colour means, then how shipped, planned and replaced months look."""
    out = ['<g aria-hidden="true">']
    x = MARGIN
    for kind in (PLANNED_BASELINE, HOTPATCH, UNPLANNED_BASELINE):
        style = _STYLES[kind]
        out += [
            f'<rect x="{x}" y="{y - 12}" width="22" height="16" rx="4" fill="{style.ink}"/>',
            f'<text x="{x + 30}" y="{y + 1}" font-size="13" fill="{_TEXT}">'
            f"{_esc(style.label)}</text>",
        ]
        x += 30 + _text_width(style.label, 13) + 28
    y += 24
    x = MARGIN
    swatches = [
        ("Solid: shipped", ""),
        ("Dashed, pale: planned, nothing shipped yet", ' stroke-dasharray="4 3"'),
    ]
    for label, dash in swatches:
        out += [
            f'<rect x="{x}" y="{y - 12}" width="22" height="16" rx="4" fill="#ffffff" '
            f'stroke="{_MUTED}" stroke-width="1.5"{dash}/>',
            f'<text x="{x + 30}" y="{y + 1}" font-size="13" fill="{_TEXT}">{_esc(label)}</text>',
        ]
        x += 30 + _text_width(label, 13) + 28
    out += _marker(x + 3, y - 12, _STYLES[UNPLANNED_BASELINE].ink)
    out.append(
        f'<text x="{x + 30}" y="{y + 1}" font-size="13" fill="{_TEXT}">'
        "An unplanned baseline replaced that month's hotpatch</text>"
    )
    out.append("</g>")
    return out


def _heading_size(heading: str) -> int:
    """The heading's font size: 24, smaller (down to 14) for a long custom title."""
    size = 24
    while size > 14 and _text_width(heading, size, bold=True) > WIDTH - 2 * MARGIN:
        size -= 1
    return size


def _check(year: int, entries: Sequence[MonthEntry]) -> list[MonthEntry]:
    """The entries in month order, or a ``CatalogError`` if they are not one year's twelve."""
    ordered = sorted(entries, key=lambda e: e.month)
    if [e.month for e in ordered] != list(range(1, 13)):
        raise CatalogError(
            "a calendar picture needs exactly one entry for each month 1..12, "
            f"got months {[e.month for e in entries]}"
        )
    wrong = [e.month for e in ordered if e.date.year != year]
    if wrong:
        raise CatalogError(f"months {wrong} are dated outside {year}")
    return ordered


def render_svg(year: int, entries: Sequence[MonthEntry], *, title: str | None = None) -> str:
    """A standalone SVG of ``year``'s release plan with the releases that actually shipped.

    ``entries`` are the twelve months from ``calendar()``; ``title`` replaces the
    default heading "Hotpatch release calendar YYYY". The text is UTF-8 and starts
    with ``<svg``, ready to serve as ``image/svg+xml`` or to inline in HTML.
    """
    ordered = _check(year, entries)
    heading = title if title is not None else f"Hotpatch release calendar {year}"
    ident = f"hotpatch-calendar-{year}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" font-family="{FONT}">',
        f'<title id="{ident}-title">{_esc(heading)}</title>',
        f'<desc id="{ident}-desc">{_esc(_describe(year, ordered))}</desc>',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<text x="{MARGIN}" y="44" font-size="{_heading_size(heading)}" font-weight="700" '
        f'fill="{_TEXT}">'
        f"{_esc(heading)}</text>",
        f'<text x="{MARGIN}" y="68" font-size="13" fill="{_MUTED}">{CAPTION}</text>',
    ]
    out += _legend(102)
    for index, entry in enumerate(ordered):
        row, column = divmod(index, COLUMNS)
        x = MARGIN + ROW_LABEL + column * (CELL_W + GAP)
        y = GRID_TOP + row * (CELL_H + GAP)
        if column == 0:
            out.append(
                f'<text x="{MARGIN}" y="{y + 27}" font-size="15" font-weight="700" '
                f'fill="{_MUTED}">Q{row + 1}</text>'
            )
        out += _cell(entry, x, y)
    out.append("</svg>")
    return "\n".join(out) + "\n"
