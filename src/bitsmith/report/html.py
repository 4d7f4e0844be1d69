"""Markdown reports as standalone HTML pages: the small subset our reports use (headings, paragraphs, tables,
images, fenced code, inline code and bold), so a report opens in a browser with its figures and no extra package."""

from __future__ import annotations

import html
import re

_STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem}
th{background:#f3f3f3}td.num{text-align:right}img{max-width:100%}pre{background:#f6f6f6;padding:.75rem;
overflow:auto;font-size:.8rem}code{background:#f3f3f3;padding:0 .2rem}"""


def _inline(text: str) -> str:
    """Escape ``text`` and render inline code, bold and images."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part)
        part = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', part)
        out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part))
    return "".join(out)


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _table(rows: list[str]) -> str:
    head, align = _cells(rows[0]), _cells(rows[1]) if len(rows) > 1 else []
    right = [a.endswith(":") for a in align]
    body = rows[2:] if len(rows) > 1 and set(rows[1]) <= set("|-: ") else rows[1:]
    lines = ["<table>", "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
    for row in body:
        cells = _cells(row)
        tags = ['<td class="num">' if i < len(right) and right[i] else "<td>" for i in range(len(cells))]
        lines.append("<tr>" + "".join(f"{tag}{_inline(c)}</td>" for tag, c in zip(tags, cells, strict=True))
                     + "</tr>")
    return "\n".join([*lines, "</table>"])


def markdown_to_html(markdown: str, title: str = "bitsmith report") -> str:
    """A standalone HTML page of ``markdown`` (the subset bitsmith's reports are written in)."""
    blocks: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            blocks.append("<pre><code>" + html.escape("\n".join(lines[i + 1:end])) + "</code></pre>")
            i = end + 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            blocks.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            end = i
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
            blocks.append(_table(lines[i:end]))
            i = end
        elif line.strip():
            end = i
            while end < len(lines) and lines[end].strip() and not lines[end].startswith(("#", "```", "|")):
                end += 1
            blocks.append("<p>" + _inline(" ".join(s.strip() for s in lines[i:end])) + "</p>")
            i = end
        else:
            i += 1
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(blocks) + "\n</body></html>\n")
