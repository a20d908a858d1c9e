"""Shared helpers for the converters in ``scripts/realdata``: reading a source, writing atomically, counting.

A source is either a bare git directory (what the search tool's ``fetch`` brings:
``/work/.mirror/<owner>+<name>/repo``) read at a commit, or a plain directory holding the same files.
Only the standard library is used.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CATALOG_HEADER = ("product_id", "name", "brand", "category_path")
PATH_SEPARATOR = " > "


def _is_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


class Source:
    """Files of a fetched repository: a bare git directory at ``commit``, or a plain directory."""

    def __init__(self, path: Path, commit: str = "HEAD") -> None:
        if _is_git_dir(path / ".git"):
            path = path / ".git"
        self.path = path
        self.git = _is_git_dir(path)
        if not self.git and not path.is_dir():
            raise SystemExit(f"{path}: neither a git directory nor a folder")
        try:
            self.commit = self._git("rev-parse", f"{commit}^{{commit}}").strip() if self.git else "(plain folder)"
        except subprocess.CalledProcessError:
            raise SystemExit(f"{path}: no commit {commit!r}") from None
        self._batch: subprocess.Popen[bytes] | None = None

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(self.path), *args], check=True, capture_output=True, text=True
        ).stdout

    def list_files(self, under: str = "") -> list[str]:
        """Paths of the files under ``under`` (a folder, relative to the repository root), sorted."""
        if self.git:
            out = self._git("ls-tree", "-r", "-z", "--name-only", self.commit, "--", under or ".")
            return sorted(p for p in out.split("\0") if p)
        root = self.path / under
        return sorted(str(p.relative_to(self.path)) for p in root.rglob("*") if p.is_file())

    def read_bytes(self, name: str) -> bytes | None:
        """A file's bytes, or None when this copy lacks it (fetch leaves out files of 4 MiB and more)."""
        if not self.git:
            file = self.path / name
            return file.read_bytes() if file.is_file() else None
        if self._batch is None:
            self._batch = subprocess.Popen(
                ["git", "--git-dir", str(self.path), "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        assert self._batch.stdin is not None and self._batch.stdout is not None
        self._batch.stdin.write(f"{self.commit}:{name}\n".encode())
        self._batch.stdin.flush()
        header = self._batch.stdout.readline().split()
        if len(header) != 3:  # "<name> missing"
            return None
        data = self._batch.stdout.read(int(header[2]))
        self._batch.stdout.read(1)  # the newline after the object
        return data

    def read_text(self, name: str) -> str | None:
        data = self.read_bytes(name)
        return None if data is None else data.decode("utf-8-sig")

    def close(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None
            self._batch.stdin.close()
            self._batch.wait()
            self._batch = None


def clean_text(value: str | None) -> str:
    """Whitespace collapsed to single spaces, ends stripped."""
    return " ".join((value or "").split())


def category_path(levels: Iterable[str]) -> str:
    """Levels joined with `` > ``; empty levels dropped, and a ``>`` inside a level made a ``/``."""
    cleaned = [clean_text(level).replace(">", "/") for level in levels]
    return PATH_SEPARATOR.join(level for level in cleaned if level)


@dataclass
class Counts:
    """Rows read, written and skipped (by reason), printed at the end of a run."""

    read: int = 0
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    tallies: Counter[str] = field(default_factory=Counter)  # things counted that did not drop a row
    notes: dict[str, object] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def tally(self, what: str) -> None:
        self.tallies[what] += 1

    def report(self, title: str) -> None:
        print(f"{title}: rows read {self.read}, written {self.written}, skipped {sum(self.skipped.values())}")
        for reason, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"  skipped {n:>8}  {reason}")
        for what, n in sorted(self.tallies.items()):
            print(f"  {what}: {n}")
        for key, value in self.notes.items():
            print(f"  {key}: {value}")


def _replace_atomically(target: Path, text_rows: Iterator[str]) -> None:
    """Write the lines to a temporary file beside ``target``, then rename it over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            for chunk in text_rows:
                out.write(chunk)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is data for everyone to read
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Line:
    """A file-like sink that hands each ``csv.writer`` line back to the caller."""

    def __init__(self) -> None:
        self.value = ""

    def write(self, text: str) -> int:
        self.value = text
        return len(text)


def write_csv(target: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A CSV (RFC 4180 quoting, ``\\n`` line ends) written atomically."""

    def lines() -> Iterator[str]:
        sink = _Line()
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(header)
        yield sink.value
        for row in rows:
            writer.writerow(row)
            yield sink.value

    _replace_atomically(target, lines())


def write_jsonl(target: Path, records: Iterable[object]) -> None:
    """One JSON object a line (UTF-8, not ASCII-escaped), written atomically."""
    _replace_atomically(target, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def catalog_summary(rows: Sequence[Sequence[str]]) -> dict[str, object]:
    """Products, distinct non-empty brands, category nodes (every prefix of every path) and deepest path."""
    nodes: set[tuple[str, ...]] = set()
    leaves: set[str] = set()
    depth = 0
    for row in rows:
        levels = tuple(row[3].split(PATH_SEPARATOR))
        leaves.add(row[3])
        depth = max(depth, len(levels))
        nodes.update(levels[:i] for i in range(1, len(levels) + 1))
    return {
        "products": len(rows),
        "brands": len({row[2] for row in rows if row[2]}),
        "category paths used": len(leaves),
        "category nodes": len(nodes),
        "max depth": depth,
    }


def write_catalog(out_dir: Path, rows: Sequence[Sequence[str]], counts: Counts) -> Path:
    """``out_dir/catalog.csv`` with the engine's header, written atomically; the summary goes into ``counts``."""
    target = out_dir / "catalog.csv"
    write_csv(target, CATALOG_HEADER, rows)
    counts.written = len(rows)
    counts.notes.update(catalog_summary(rows))
    counts.notes["output"] = str(target)
    return target


CatalogRows = list[tuple[str, str, str, str]]


def catalog_main(
    doc: str | None,
    source_help: str,
    title: str,
    convert: Callable[[Source, argparse.Namespace], tuple[CatalogRows, Counts]],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """A catalog converter's command line: SOURCE OUT_DIR [--commit C] (and its own options), the rows
    converted and written atomically to OUT_DIR/catalog.csv, and the report printed under ``title``."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("source", type=Path, help=source_help)
    parser.add_argument("out_dir", type=Path, help="folder to write catalog.csv into")
    parser.add_argument("--commit", default="HEAD", help="commit to read in a git dir (default HEAD)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    source = Source(args.source, args.commit)
    try:
        rows, counts = convert(source, args)
    finally:
        source.close()
    write_catalog(args.out_dir, rows, counts)
    counts.notes["source commit"] = source.commit
    counts.report(title)
