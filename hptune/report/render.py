"""Writers: one self-contained HTML file (PNGs inline as base64), Markdown with PNGs beside it,
and every table as CSV."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

from hptune.report import safe_name
from hptune.report.sections import Image, Section, Table, Text

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
table.sortable th { cursor: pointer; } table.sortable th:hover { background: #e4e4e4; }
tr.best td { background: #fff3b0; font-weight: 600; }
.wide { overflow-x: auto; max-width: 100%; }
img { max-width: 100%; height: auto; display: block; margin: .5rem 0 1.2rem; }
p.note { color: #555; }
"""

# After loading, the page records how many of its images failed to decode (a browser test reads
# it; a reader never sees it).
LOAD_SCRIPT = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.brokenImages = images.filter((i) => !i.complete || !i.naturalWidth).length;
});
"""

# Click a heading to sort by that column (numbers numerically); click again to reverse.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, column) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const rows = Array.from(body.rows);
    const up = th.dataset.order !== "asc";
    th.dataset.order = up ? "asc" : "desc";
    const key = (row) => {
      const text = row.cells[column].textContent.trim();
      const number = Number(text);
      return text === "" || isNaN(number) ? text : number;
    };
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0)
                                          : (typeof x === "number" ? -1 : 1);
      return up ? order : -order;
    });
    rows.forEach((row) => body.appendChild(row));
  });
});
"""


def write_html(sections: list[Section], title: str, path: Path) -> None:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [_html_block(block) for block in section.blocks]
    parts.append(f"<script>{SORT_SCRIPT}{LOAD_SCRIPT}</script></body></html>")
    path.write_text("\n".join(parts))


def _html_block(block: Text | Table | Image) -> str:
    if isinstance(block, Text):
        return f'<p class="note">{html.escape(block.text)}</p>'
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        alt = html.escape(block.alt)
        return f'<img src="data:image/png;base64,{data}" alt="{alt}" title="{alt}">'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in block.columns)
    body = []
    for index, row in enumerate(block.rows):
        colours = block.colours[index] if block.colours else [None] * len(row)
        cells = "".join(
            f'<td style="background:{colour}">{html.escape(str(v))}</td>'
            if colour
            else f"<td>{html.escape(str(v))}</td>"
            for v, colour in zip(row, colours, strict=True)
        )
        attrs = ' class="best"' if index == block.highlight else ""
        body.append(f"<tr{attrs}>{cells}</tr>")
    kind = ' class="sortable"' if block.sortable else ""
    return (
        f'<div class="wide"><table{kind}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def write_markdown(sections: list[Section], title: str, path: Path, figures: Path) -> None:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [block.text, ""]
            elif isinstance(block, Image):
                name = safe_name(block.name)  # (parameter names come from the stores)
                (figures / name).write_bytes(block.png)
                lines += [f"![{block.alt}]({figures.name}/{name})", ""]
            else:
                lines += [*_markdown_table(block), ""]
    path.write_text("\n".join(lines))


def _markdown_table(table: Table) -> list[str]:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(c) for c in table.columns) + " |",
        "| " + " | ".join("---" for _ in table.columns) + " |",
    ]
    for index, row in enumerate(table.rows):
        cells = [cell(v) for v in row]
        if index == table.highlight:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_csvs(sections: list[Section], folder: Path) -> list[Path]:
    written = []
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Table) and block.csv_name:
                path = folder / safe_name(block.csv_name)
                with path.open("w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(block.columns)
                    writer.writerows(block.rows)
                written.append(path)
    return written
