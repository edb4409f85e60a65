"""
The status report read back as a reader (or a browser) would: the HTML parsed into its tables and cells (classes,
escaping, the summary, the RPC groups), the Markdown split into table cells (a '|' inside a cell escaped).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from halofleet.views.report import render_report
from halofleet.views.verify import COLUMNS


def row(host: str, status: str, **cells: str) -> dict[str, str]:
    return {**{column: "-" for column in COLUMNS}, "host": host, "status": status, **cells}


ROWS = [
    row("head", "ok", cmdline="ok", rpc="head: w1 ok (0.31 MiB)", serving="llama-server active, /health 200"),
    row("w1", "ok", rpc="worker of head: listening on 10.0.0.2:50052 only"),
    row("<b>x</b>", "refused: host 'x': a|b", cmdline="differs", **{"reboot pending": "yes"}),
]


class Page(HTMLParser):
    """Tables as {id: [[(class, text), ...] per row]}, plus the title, h1, paragraphs and each tr's attributes."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.rows_attrs: list[dict[str, str]] = []
        self.text: dict[str, list[str]] = {"title": [], "h1": [], "h2": [], "p": []}
        self._table = self._cell = self._in = None
        self.open: list[str] = []  # every element closed in order: the page is well formed, not repaired

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "br"):
            self.open.append(tag)
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
            self.rows_attrs.append(attrs)
        elif tag in ("td", "th") and self._table:
            self._cell = [attrs.get("class") or "", ""]
        elif tag in self.text:
            self._in = tag
            self.text[tag].append("")

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data
        elif self._in:
            self.text[self._in][-1] += data


def test_the_html_report_cell_by_cell():
    page = Page()
    text = render_report(ROWS, "html", "prod")
    page.feed(text)
    assert page.open == [] and text.startswith("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n")
    # Host names and cells may carry non-ASCII: the encoding is declared before anything else.
    assert text.split("\n")[3] == '<meta charset="utf-8">'
    assert text.rstrip().endswith("</table>\n</body>\n</html>")
    assert page.text["title"] == ["halofleet status: prod"] and page.text["h1"] == ["halofleet status: prod"]
    meta, summary = page.text["p"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC · 3 hosts", meta), meta
    assert summary == "ok: 2refused: 1"
    header, *hosts = page.tables["hosts"]
    assert [text for _, text in header] == list(COLUMNS)
    assert [dict(zip(COLUMNS, cells))["host"][1] for cells in hosts] == ["head", "w1", "<b>x</b>"]  # escaped
    third = dict(zip(COLUMNS, hosts[2]))
    assert third["status"] == ("bad", "refused: host 'x': a|b") and third["cmdline"] == ("bad", "differs")
    assert third["reboot pending"] == ("warn", "yes")
    first = dict(zip(COLUMNS, hosts[0]))
    assert first["status"] == ("ok", "ok") and first["serving"] == ("ok", "llama-server active, /health 200")
    assert [attrs for attrs in page.rows_attrs if attrs.get("class") == "host"] == [
        {"class": "host", "data-host": name} for name in ("head", "w1", "<b>x</b>")]
    assert page.text["h2"] == ["RPC groups"]
    group_header, group = page.tables["groups"]
    assert [text for _, text in group_header] == ["head", "workers", "state"]
    assert group == [("", "head"), ("", "w1: ok (0.31 MiB); listening on 10.0.0.2:50052 only"), ("ok", "ok")]
    assert {"class": "group", "data-head": "head"} in page.rows_attrs


def test_a_degraded_group_is_marked_bad_and_one_host_is_singular():
    rows = [row("head", "unhealthy", rpc="head: w1 not seen"), row("w1", "ok", rpc="worker of head: x")]
    page = Page()
    page.feed(render_report(rows, "html", "t"))
    assert page.tables["groups"][1][2] == ("bad", "degraded (head unhealthy)")
    single = Page()
    single.feed(render_report(ROWS[1:2], "html", "t"))
    assert single.open == []
    assert single.text["p"][0].endswith(" · 1 host") and "groups" not in single.tables
    assert single.text["h2"] == []


def markdown_cells(line: str) -> list[str]:
    line = line.rstrip()
    assert line.startswith("| ") and line.endswith(" |"), line
    return [cell.replace("\\|", "|") for cell in re.split(r"(?<!\\) \| ", line[2:-2])]


def test_the_markdown_report_cell_by_cell():
    text = render_report(ROWS, "md", "prod")
    lines = text.splitlines()
    assert lines[0] == "# halofleet status: prod"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC · 3 hosts · ok: \*\*2\*\* · refused: \*\*1\*\*", lines[2])
    table = [line for line in lines if line.startswith("|")]
    assert markdown_cells(table[0]) == list(COLUMNS)
    assert table[1] == "|" + "---|" * len(COLUMNS)
    hosts = [dict(zip(COLUMNS, markdown_cells(line))) for line in table[2:5]]
    assert [h["host"] for h in hosts] == ["head", "w1", "<b>x</b>"]
    assert hosts[2]["status"] == "refused: host 'x': a|b" and hosts[2]["reboot pending"] == "yes"
    assert all(len(markdown_cells(line)) == len(COLUMNS) for line in table[2:5])
    assert "## RPC groups" in lines
    assert table[5:] == ["| head | workers | state |", "|---|---|---|",
                         "| head | w1: ok (0.31 MiB); listening on 10.0.0.2:50052 only | ok |"]
    assert "RPC groups" not in render_report(ROWS[1:2], "md", "t")
    assert render_report(ROWS[1:2], "md", "t").splitlines()[2].endswith(" · 1 host · ok: **1**")
