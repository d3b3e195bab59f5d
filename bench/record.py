"""Writing the latest table into docs/benchmarks.rst, between its two markers.

Only the lines between the markers are replaced; the prose around them is the
docs' own and is kept as it is.
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


def record(text: str, doc: Path = DOC) -> None:
    lines = doc.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index(START)
        end = lines.index(END, start + 1)
    except ValueError:
        raise MarkersMissing(
            f"{doc} needs the lines {START!r} and {END!r}; the table goes between them."
        ) from None
    lines[start + 1 : end] = as_literal_block(text)
    doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
