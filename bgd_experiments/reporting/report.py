"""The one model of a report, and one renderer per format.

A :class:`Report` is warnings, a provenance line, notes and :class:`Section` s; a section is
a heading, paragraphs, at most one :class:`Grid` (a table of text), a bulleted list and
paragraphs after it. Every artefact is a builder of a ``Report`` (or of a bare ``Grid``);
:func:`render_md`, :func:`render_csv` and :func:`render_tex` turn them into files.

Markdown puts a blank line between blocks (warnings in bold, the provenance line, notes,
each section's heading, paragraphs, grid and list). LaTeX writes booktabs tabulars and
everything else as ``%`` comments, so the file can be ``\\input``: the warnings, provenance
and notes; the lead (level 1) section's heading and paragraphs; and of every other section
only what it names for LaTeX (``tex``: the grid's caption, ``tex_bullets``: the prefix of
each list item).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Grid:
    """A table of text: column headings and rows of cells. ``label_columns``: how many
    leading columns are labels (left-aligned in LaTeX; the others right-aligned)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[object]]
    label_columns: int = 1


@dataclass(frozen=True)
class Section:
    """A heading (``level`` hashes in Markdown; None: no heading), paragraphs, a grid, a list
    and paragraphs after them, each optional."""

    heading: str | None = None
    notes: Sequence[str] = ()
    grid: Grid | None = None
    bullets: Sequence[str] = ()
    after: Sequence[str] = ()
    level: int = 2
    tex: str | None = None  # the grid's caption in LaTeX; None: the grid is not in the .tex
    tex_bullets: str | None = None  # each list item's prefix in LaTeX; None: not in the .tex


@dataclass(frozen=True)
class Report:
    """Warnings (loud, first), the provenance line, notes, then the sections."""

    sections: Sequence[Section] = ()
    provenance: str | None = None
    warnings: Sequence[str] = ()
    notes: Sequence[str] = ()


# --------------------------------------------------------------------------- cells


def number_text(value: float | None, fmt: str, missing: str = "-") -> str:
    """A cell's number in ``fmt``, or ``missing`` where there is none."""
    return missing if value is None else format(value, fmt)


# --------------------------------------------------------------------------- Markdown


def markdown_grid(grid: Grid) -> str:
    """A pipe table; a ``|`` inside a cell is escaped."""

    def line(values: Sequence[object]) -> str:
        return "| " + " | ".join(str(value).replace("|", "\\|") for value in values) + " |"

    lines = [line(grid.columns), "|" + "|".join("---" for _ in grid.columns) + "|"]
    lines += [line(row) for row in grid.rows]
    return "\n".join(lines)


def section_blocks(section: Section) -> list[str]:
    """The Markdown blocks of one section (blank lines go between them)."""
    blocks = []
    if section.heading is not None:
        blocks.append("#" * section.level + " " + section.heading)
    blocks += section.notes
    if section.grid is not None:
        blocks.append(markdown_grid(section.grid))
    if section.bullets:
        blocks.append("\n".join(f"- {bullet}" for bullet in section.bullets))
    blocks += section.after
    return blocks


def section_markdown(section: Section) -> str:
    """One section in Markdown, without a final newline."""
    return "\n\n".join(section_blocks(section))


def markdown_blocks(report: Report) -> list[str]:
    blocks = [f"**{warning}**" for warning in report.warnings]
    if report.provenance is not None:
        blocks.append(report.provenance)
    blocks += report.notes
    for section in report.sections:
        blocks += section_blocks(section)
    return blocks


def render_md(report: Report) -> str:
    """The Markdown document: blocks separated by blank lines, ending with a newline."""
    return "\n\n".join(markdown_blocks(report)) + "\n"


# --------------------------------------------------------------------------- CSV


def render_csv(grid: Grid) -> str:
    """The grid as CSV: a header line and a line per row (None: an empty field)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(grid.columns)
    writer.writerows(grid.rows)
    return buffer.getvalue()


def render_csv_records(columns: Sequence[str], records: Sequence[dict[str, object]]) -> str:
    """Records (dicts) as CSV with ``columns``; a missing or None value is an empty field."""
    rows = [
        ["" if record.get(key) is None else record[key] for key in columns] for record in records
    ]
    return render_csv(Grid(columns, rows))


# --------------------------------------------------------------------------- LaTeX

_TEX_REPLACEMENTS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "_": r"\_",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "±": r"$\pm$",
    "−": "-",
    "—": "--",
}
BOOKTABS = "% Needs \\usepackage{booktabs}."


def tex_escape(text: str) -> str:
    """Escape LaTeX specials; ``±`` becomes ``$\\pm$``."""
    return "".join(_TEX_REPLACEMENTS.get(char, char) for char in text)


def tex_grid(grid: Grid) -> list[str]:
    """A booktabs tabular."""
    columns = "l" * grid.label_columns + "r" * (len(grid.columns) - grid.label_columns)
    lines = [
        rf"\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        " & ".join(tex_escape(str(value)) for value in grid.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(tex_escape(str(value)) for value in row) + r" \\" for row in grid.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return lines


def render_tex(report: Report) -> str:
    """Booktabs tabulars; the rest as ``%`` comments (see the module's docstring)."""
    lines = [f"% {warning}" for warning in report.warnings]
    if report.provenance is not None:
        lines.append(f"% {report.provenance}")
    lines += [f"% {note}" for note in report.notes]
    for section in report.sections:
        if section.level == 1:
            if section.heading is not None:
                lines.append(f"% {section.heading}")
            lines += ["% " + note.replace("`", "") for note in section.notes]
            if section.grid is not None:
                lines += [BOOKTABS, *tex_grid(section.grid)]
            continue
        if section.grid is not None and section.tex is not None:
            lines += ["", f"% {section.tex}", *tex_grid(section.grid)]
        if section.tex_bullets is not None:
            lines += [f"% {section.tex_bullets}{bullet}" for bullet in section.bullets]
    return "\n".join(lines) + "\n"
