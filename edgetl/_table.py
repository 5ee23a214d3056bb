"""Plain-text tables with aligned columns, for the device-side commands' default output."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Optional[Sequence[bool]] = None) -> str:
    """Aligns ``rows`` under ``headers``; numbers right-aligned unless ``right`` says otherwise.

    Args:
      headers: column titles.
      rows: cells; anything ``str()`` can render (None renders as '-').
      right: per-column right alignment; default: right-align columns whose
        cells are all numbers.

    Returns:
      The table as lines joined by newlines (no trailing newline).
    """
    cells: List[List[str]] = [["-" if cell is None else str(cell) for cell in row] for row in rows]
    if right is None:
        right = [bool(rows) and all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(headers))]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)
