"""Where the summaries and the report write, and how values from files are written into them: checked
output names (safe_name: [A-Za-z0-9._=-], no leading '.' or '-', at most 100 characters; output_path:
inside the resolved folder), no symbolic link or other non-regular file followed or replaced
(UnsafeOutput), files rendered first and then written atomically (write_outputs); the one escaping per
format (markdown_escape, markdown_code, csv_cell: OWASP's formula rule, figure_text) and the one-line
argument errors of the command-line tools (OneLineParser, exit status 2).

It holds no reading of run records and no science.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import stat
from pathlib import Path

from atomic_io import atomic_write
from config_utils import name_problem
from run_records import _kind, printable


# ------------------------------------------------------------------------------ writing inside --out
class UnsafeOutput(ValueError):
    """An output name or path that is not written; str() is one line."""


def safe_name(name: str) -> str:
    """`name` when it is a safe file name (config_utils.name_problem, at most 100 characters: no
    separator, NUL, newline, '..' or absolute path can pass), else UnsafeOutput."""
    if (problem := name_problem(name, max_length=100)) is not None:
        raise UnsafeOutput(f"{json.dumps(str(name))[:80]} is not a safe file name (allowed: {problem})")
    return name


def output_path(out: Path, name: str) -> Path:
    """The path of output `name` in the folder `out`: a safe_name, inside the resolved `out`, and not a
    symbolic link, folder or other non-regular file already (UnsafeOutput: such a name is refused, never
    followed or replaced). Writes then go through atomic_io, which renames a temporary made beside it
    onto the name: a hard link there keeps its old content, and a link made after this check is replaced,
    not followed."""
    folder = Path(out).resolve()
    path = folder / safe_name(name)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise UnsafeOutput(f"{printable(path)}: {error.strerror or error}") from None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise UnsafeOutput(f"{printable(path)} is a symbolic link (to {printable(os.readlink(path))}): refusing "
                           "to write through or over it; remove it or choose another --out")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UnsafeOutput(f"{printable(path)} is {_kind(info.st_mode)}: refusing to write over it")
    if path.resolve().parent != folder:   # cannot happen after the checks above; the rule, stated
        raise UnsafeOutput(f"{printable(path)} is outside {printable(folder)}")
    return path


def output_folder(out: Path) -> Path:
    """`out`, created if missing; UnsafeOutput in one line when it cannot be a folder."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as error:
        raise UnsafeOutput(f"{printable(out)}: cannot be the output folder "
                           f"({getattr(error, 'strerror', None) or error})") from None
    if not Path(out).is_dir():
        raise UnsafeOutput(f"{printable(out)}: cannot be the output folder (not a folder)")
    return Path(out)


def write_outputs(out: Path, contents: dict[str, str | bytes]) -> list[Path]:
    """Write each name -> text or bytes into `out` atomically, after checking every name first (one
    refused name: nothing written). Returns the paths, in order."""
    paths = {name: output_path(out, name) for name in contents}
    written = []
    for name, content in contents.items():
        def write(temporary, content=content):
            if isinstance(content, bytes):
                temporary.write_bytes(content)
            else:
                temporary.write_text(content, encoding="utf-8")
        written.append(atomic_write(paths[name], write))
    return [Path(out) / path.name for path in written]


# --------------------------------------------------------------------------- escaping values from files
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def one_line(value) -> str:
    """str(value) with control characters as U+FFFD and every run of whitespace (newlines included) as
    one space."""
    text = "" if value is None else str(value)
    return re.sub(r"\s+", " ", _CONTROL.sub("\ufffd", text))


def markdown_escape(value) -> str:
    """A value from a file as markdown text (a table cell or prose): one line, and no character that
    would end a table cell, open a code span, link or image, or be HTML (backslash, |, `, [, ] escaped;
    &, <, > as entities)."""
    text = one_line(value).replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for character in "|`[]":
        text = text.replace(character, "\\" + character)
    return text


def markdown_code(value, table: bool = False) -> str:
    """A value from a file as a markdown code span, backticks included: one line, fenced by more
    backticks than it holds (it cannot close its span), `|` escaped in a table cell (GFM reads the
    escape there). Code spans show HTML as text, so nothing else needs escaping."""
    text = one_line(value)
    if table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" or (text[:1] == " " and text[-1:] == " ") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_NUMERIC_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.ASCII)


def csv_cell(value) -> str:
    """A CSV cell: None empty, floats as repr (they read back bit for bit), other numbers as str; text
    that a spreadsheet would run as a formula (starting with = + - @, tab or CR, OWASP's rule) gets a
    leading apostrophe, and so does text that starts with one (the reader strips exactly one). Text
    that is a plain number ("-0.5") stays as it is."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, bool)):
        return str(value)
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r", "'") and not _NUMERIC_TEXT.fullmatch(text):
        return "'" + text
    return text


def figure_text(value, limit: int = 80) -> str:
    """A value from a file as matplotlib text: one line, at most `limit` characters, `$` escaped (else
    mathtext parses it, and bad math raises when the figure is drawn)."""
    text = one_line(value)
    text = text if len(text) <= limit else text[:limit - 1] + "\u2026"
    return text.replace("$", r"\$")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one `error:` line on stderr (exit status 2), not usage + error."""

    def error(self, message):
        self.exit(2, f"error: {printable(message)} (see --help)\n")
