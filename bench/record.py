"""Writing a table into a docs page, between its two marker lines.

Only the lines between the markers are replaced; the prose around them is the
docs' own and is kept as it is. ``make bench`` writes docs/benchmarks.rst
between the ``bench-table`` markers; ``bench.growth`` and ``bench.loadtest`` use the
same code with markers of their own.
"""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.rst"
START = ".. bench-table-start"
END = ".. bench-table-end"


class MarkersMissing(RuntimeError):
    pass


def as_literal_block(text: str) -> list[str]:
    # A literal block: no RST markup inside can break the Sphinx build.
    body = [f"   {line}" if line else "" for line in text.splitlines()]
    return ["", "::", "", *body, ""]


def _markers(lines: list[str], doc: Path, start: str, end: str) -> tuple[int, int]:
    try:
        first = lines.index(start)
        return first, lines.index(end, first + 1)
    except ValueError:
        raise MarkersMissing(
            f"{doc} needs the lines {start!r} and {end!r}; the table goes between them."
        ) from None


def check(doc: Path = DOC, start: str = START, end: str = END) -> None:
    """Raise MarkersMissing now if ``record`` could not write (before long work)."""
    if not doc.exists():
        raise MarkersMissing(f"{doc} does not exist (yet); nothing to record into.")
    _markers(doc.read_text(encoding="utf-8").splitlines(), doc, start, end)


def record(text: str, doc: Path = DOC, start: str = START, end: str = END) -> None:
    check(doc, start, end)
    lines = doc.read_text(encoding="utf-8").splitlines()
    first, last = _markers(lines, doc, start, end)
    lines[first + 1 : last] = as_literal_block(text)
    doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
