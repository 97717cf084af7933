"""Read the bytes of a dataset's files where they lie: plain files or members of zip/tar packages.

Packages are read in place, never unpacked to disk. ``iter_members`` visits the wanted members of one package
in the package's own order, so a gzip-compressed tar is decompressed once, front to back. ``read_rows`` reads
every file of a group of manifest rows that way: each package once, plain files as their row comes up.
"""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reliable_ad.data.layout import UnsafePath, member_column, resolve_inside


class MissingFile(FileNotFoundError):
    """A file, package or package member the manifest names is not there."""


class UnreadablePackage(OSError):
    """A package that cannot be opened or read to the end (corrupt, truncated, not a package)."""


PACKAGE_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError)
ReadError = UnsafePath | OSError  # MissingFile and UnreadablePackage are OSErrors


@dataclass(frozen=True)
class Location:
    """Where one file of a row lies: a plain file (member None), or a member of a package. Both relative to
    the dataset root, as the manifest's location and member columns hold them."""

    path: str
    member: str | None = None

    @property
    def package(self) -> str | None:
        return self.path if self.member is not None else None

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member is not None else self.path


def location_of(row: Mapping[Any, Any], kind: str) -> Location | None:
    """The location of `kind` ("image", "product", ...) in a manifest row; None where the row has none.

    Nulls may be None or NaN (pandas)."""
    path, member = row[kind], row.get(member_column(kind))
    if not isinstance(path, str):
        return None
    return Location(path, member if isinstance(member, str) else None)


def located(error: Exception, where: str) -> Exception:
    """The same kind of error, its message prefixed by `where` (the row it belongs to)."""
    return type(error)(f"{where}: {error}")


def list_members(archive: Path) -> list[str]:
    """Names of the files inside a zip or tar package (directories left out)."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            return [info.filename for info in zf.infolist() if not info.is_dir()]
    with tarfile.open(archive, "r:*") as tf:
        return [member.name for member in tf if member.isfile()]


def read_file(root: Path, relative: str, where: str = "manifest") -> bytes:
    """The bytes of a plain file under `root`; errors start with `where`."""
    path = resolve_inside(root, relative, where)
    if not path.is_file():
        raise MissingFile(f"{where}: {relative} does not exist under {root}")
    return path.read_bytes()


def iter_members(archive: Path, wanted: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Yield (member, bytes) for the wanted members of one package, in package order.

    A wanted member that the package lacks raises MissingFile after the others were yielded.
    """
    remaining = set(wanted)
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.filename in remaining:
                    remaining.discard(info.filename)
                    yield info.filename, zf.read(info)
    else:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:
                if member.name in remaining and member.isfile():
                    handle = tf.extractfile(member)
                    if handle is None:
                        continue
                    remaining.discard(member.name)
                    yield member.name, handle.read()
    if remaining:
        example = sorted(remaining)[0]
        raise MissingFile(f"{archive}: {len(remaining)} member(s) missing, e.g. {example}")


RowFiles = Mapping[str, Location]  # kind ("image", "product", ...) -> where that file of the row lies


def read_rows(root: Path, rows: Sequence[RowFiles]) -> Iterator[tuple[int, dict[str, bytes] | ReadError]]:
    """Read every file of `rows`; yield (position in `rows`, kind -> bytes), or (position, error) for a row
    with a file that cannot be read. Each row comes exactly once.

    Rows whose files are all plain come first, in the given order. Then each package the rows need is read
    once, front to back, in name order, and a row comes as soon as its last member is in (its plain files are
    read then). Members of rows still waiting for another member are held in memory: a package that keeps
    the files of a sample together keeps that small. Errors name the file, or the package and the member;
    the caller adds the row.
    """
    waiting = [sum(loc.member is not None for loc in row.values()) for row in rows]
    got: list[dict[str, bytes]] = [{} for _ in rows]
    wanted: dict[str, dict[str, list[tuple[int, str]]]] = {}  # package -> member -> (position, kind)
    for position, row in enumerate(rows):
        for kind, loc in row.items():
            if loc.member is not None:
                wanted.setdefault(loc.path, {}).setdefault(loc.member, []).append((position, kind))
    for position, row in enumerate(rows):
        if not waiting[position]:
            yield position, _with_plain_files(root, row, got[position])
    for package in sorted(wanted):
        members = wanted[package]
        for position, result in _package_rows(root, package, members, waiting, got):
            yield position, (_with_plain_files(root, rows[position], result) if isinstance(result, dict) else result)
            got[position] = {}


def _package_rows(
    root: Path,
    package: str,
    members: dict[str, list[tuple[int, str]]],
    waiting: list[int],
    got: list[dict[str, bytes]],
) -> Iterator[tuple[int, dict[str, bytes] | ReadError]]:
    """One pass over `package`: store each wanted member with its rows and yield the rows it completes; then
    yield the rows of the members left unread, with the reason (`waiting` -1 marks a row that failed)."""
    cause: ReadError | None = None  # why the members left were not read; None: the package lacks them
    try:
        archive = resolve_inside(root, package, "manifest")
        if not archive.is_file():
            cause = MissingFile(f"package {package} does not exist under {root}")
        else:
            for member, data in iter_members(archive, list(members)):
                for position, kind in members.pop(member):
                    if waiting[position] > 0:
                        got[position][kind] = data
                        waiting[position] -= 1
                        if not waiting[position]:
                            yield position, got[position]
    except MissingFile:
        pass  # raised by iter_members at the end: the members left are not in the package
    except UnsafePath as error:
        cause = error
    except PACKAGE_ERRORS as error:
        cause = UnreadablePackage(f"package {package} cannot be read ({type(error).__name__}: {error})")
    for member, users in members.items():
        reason = _unread(package, member, cause)
        for position, _ in users:
            if waiting[position] > 0:
                waiting[position] = -1
                yield position, reason


def _unread(package: str, member: str, cause: ReadError | None) -> ReadError:
    if cause is None:
        return MissingFile(f"member {member} is not in package {package}")
    return type(cause)(f"member {member} of package {package} not read: {cause}")


def _with_plain_files(root: Path, row: RowFiles, got: dict[str, bytes]) -> dict[str, bytes] | ReadError:
    """`got` (the row's package members) with its plain files read, in the row's kind order."""
    data: dict[str, bytes] = {}
    for kind, loc in row.items():
        if loc.member is not None:
            data[kind] = got[kind]
            continue
        try:
            data[kind] = read_file(root, loc.path, kind)
        except (UnsafePath, OSError) as error:
            return error
    return data
