"""`index.html`: every table and figure of a report with a one-line caption, self-contained.

No external CSS, scripts or fonts and only relative links, so the page opens from the file
system with no server and no network, and the report directory can be copied as a whole.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; }
.caption { color: #444; font-style: italic; }
.missing { color: #a33; }
img { max-width: 100%; border: 1px solid #ddd; }
.scroll { max-height: 480px; overflow: auto; }
"""


@dataclass
class Section:
    """One derived table (written as `<name>.csv`) and its figure."""

    name: str
    title: str
    caption: str  #: one line: what the table measures
    table: pd.DataFrame
    missing: str = ""  #: why the table can be empty: what the sweep would need
    figure: str | None = None  #: file name of the PNG beside index.html
    figure_caption: str = ""


def _table(table: pd.DataFrame) -> str:
    return '<div class="scroll">' + table.to_html(index=False, float_format=lambda v: f"{v:.4g}",
                                                  na_rep="", border=0) + "</div>"


def section_html(section: Section) -> str:
    parts = [f'<h2 id="{section.name}">{html.escape(section.title)}</h2>',
             f'<p class="caption">{html.escape(section.caption)}</p>']
    if section.table.empty:
        parts.append(f'<p class="missing">Not in this sweep: {html.escape(section.missing)}</p>')
        return "\n".join(parts)
    parts.append(f'<p><a href="{section.name}.csv">{section.name}.csv</a></p>' + _table(section.table))
    if section.figure:
        parts.append(f'<figure><img src="{html.escape(section.figure)}" alt="{html.escape(section.title)}">'
                     f"<figcaption>{html.escape(section.figure_caption)}</figcaption></figure>")
    return "\n".join(parts)


def page(title: str, intro: list[str], sections: list[Section]) -> str:
    """The whole page: a heading, intro lines, a table of contents, then the sections in order."""
    toc = "".join(f'<li><a href="#{s.name}">{html.escape(s.title)}</a>'
                  f'{"" if not s.table.empty else " (not in this sweep)"}</li>' for s in sections)
    body = "\n".join(section_html(s) for s in sections)
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in intro)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>{lines}<ul>{toc}</ul>\n"
            f"{body}\n</body></html>\n")
