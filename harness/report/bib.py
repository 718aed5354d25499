"""The bibliography of a table spec: its ``bibliography:`` entries, checked against the references'
``bibkey``s, and written as a BibTeX file beside the table's LaTeX (``<latex stem>.bib``)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.report.render import latex_escape

BIB_TYPES = {
    "article": "journal",
    "inproceedings": "booktitle",
    "incollection": "booktitle",
    "book": "publisher",
    "phdthesis": "school",
    "techreport": "institution",
    "misc": None,
}  # type → its venue field
BIB_FIELDS = (
    "author",
    "title",
    "journal",
    "booktitle",
    "publisher",
    "school",
    "institution",
    "volume",
    "number",
    "pages",
    "year",
    "doi",
    "url",
    "note",
)
REQUIRED = ("author", "title", "year")
VERBATIM = ("doi", "url")  # written as given (no LaTeX escaping)
BIBKEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_:.+-]*")


@dataclass(frozen=True)
class BibEntry:
    key: str
    kind: str  # article, inproceedings, ...
    fields: dict[str, str]  # in BIB_FIELDS order


def check_bibkey(key: Any, context: str) -> str | None:
    """A reference's ``bibkey`` (None when absent): letters, digits and ``_:.+-``, as ``\\cite`` takes it."""
    if key is None:
        return None
    if not isinstance(key, str) or not BIBKEY.fullmatch(key):
        raise ConfigError(f"{context}: bibkey must be letters, digits and _:.+- (e.g. lake2015human), got {key!r}")
    return key


def load_bibliography(value: Any, path: Path) -> dict[str, BibEntry]:
    """The spec's ``bibliography:``, bibkey → entry::

        bibliography:
          lake2015human: {type: article, author: "Lake, Brenden M. and ...", title: ..., journal: Science,
                          volume: 350, pages: 1332–1338, year: 2015, doi: 10.1126/science.aab3050}

    ``type`` is one of BIB_TYPES; author, title, year and the type's venue (journal, booktitle, ...) are
    required. Values are plain text (escaped for LaTeX when written), except doi and url."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{path}: bibliography must map each bibkey to its entry, e.g. "
            "{lake2015human: {type: article, author: ..., title: ..., journal: ..., year: 2015}}"
        )
    entries = {}
    for key, item in value.items():
        context = f"{path}: bibliography: {key}"
        check_bibkey(key, f"{path}: bibliography")
        if not isinstance(item, dict):
            raise ConfigError(f"{context} must be a mapping of BibTeX fields, got {item!r}")
        kind = item.get("type")
        if kind not in BIB_TYPES:
            raise ConfigError(f"{context}: type must be one of {', '.join(BIB_TYPES)}, got {kind!r}")
        fields = {k: v for k, v in item.items() if k != "type"}
        for name in fields:
            if name not in BIB_FIELDS:
                close = difflib.get_close_matches(str(name), BIB_FIELDS, n=1)
                raise ConfigError(
                    f"{context}: unknown field {name!r}"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                    + f". Fields: type, {', '.join(BIB_FIELDS)}"
                )
        missing = [name for name in (*REQUIRED, BIB_TYPES[kind]) if name and name not in fields]
        if missing:
            raise ConfigError(f"{context}: a {kind} entry needs {', '.join(missing)}")
        for name, text in fields.items():
            if not isinstance(text, (str, int)) or isinstance(text, bool) or not str(text).strip():
                raise ConfigError(f"{context}: {name} must be text or a number, got {text!r}")
            if name in VERBATIM and re.search(r"[{}%\s]", str(text)):
                raise ConfigError(f"{context}: {name} may not hold braces, % or spaces, got {text!r}")
        entries[key] = BibEntry(key, kind, {name: str(fields[name]).strip() for name in BIB_FIELDS if name in fields})
    return entries


def check_cited(bibkeys: list[str], bibliography: dict[str, BibEntry], path: Path) -> None:
    """Every bibkey a reference cites has its entry (else the LaTeX table would cite nothing)."""
    for key in bibkeys:
        if key not in bibliography:
            close = difflib.get_close_matches(key, list(bibliography), n=1)
            raise ConfigError(
                f"{path}: references cite bibkey {key!r}, which the spec's bibliography does not define"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f". Add its entry, e.g. bibliography: {{{key}: {{type: article, author: ..., title: ..., "
                "journal: ..., year: ...}}"
            )


def bib_text(entries: list[BibEntry], made_by: str) -> str:
    """The entries as a BibTeX file."""
    out = [f"% Made by {made_by}; regenerate, do not edit.", ""]
    for entry in entries:
        out.append(f"@{entry.kind}{{{entry.key},")
        out += [
            f"  {name} = {{{text if name in VERBATIM else latex_escape(text)}}}," for name, text in entry.fields.items()
        ]
        out += ["}", ""]
    return "\n".join(out)
