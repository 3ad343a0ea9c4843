"""Plain-text and markdown tables for the command line and the demo."""
from __future__ import annotations

from typing import Any, List, Sequence


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *,
                 markdown: bool = False) -> str:
    """Columns padded to a common width; ``markdown=True`` adds pipes and a rule."""
    cells: List[List[str]] = [[format_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        padded = [v.ljust(w) if i == 0 else v.rjust(w)
                  for i, (v, w) in enumerate(zip(values, widths))]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded)

    out = [line(header)]
    if markdown:
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    else:
        out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells)
    return "\n".join(out)
