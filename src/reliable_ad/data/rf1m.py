"""Read an RF1M dataset folder (see `reliable_ad.data.layout`) into the manifest every later stage reads.

The reader is strict: a bad line of ``label.txt`` stops the import with its file, line number, text and
reason, or, in quarantine mode, goes to ``rejects.jsonl`` with the same facts. Either way rows in = rows
accepted + rows quarantined, and nothing is written unless the import succeeds.

RF1M has a million lines, so every check runs on whole columns (pyarrow compute); only the rows that fail a
check are visited one by one, to write their reason.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
from numpy.typing import NDArray
from pydantic import BaseModel

from reliable_ad.data import layout
from reliable_ad.data.config import ImportConfig
from reliable_ad.data.sources import PACKAGE_ERRORS, list_members
from reliable_ad.errors import InputError
from reliable_ad.labels import parse_label

METADATA_SCHEMA = pa.schema(
    [
        ("image", pa.string()),
        ("product_id", pa.string()),
        ("prompt", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("height_cm", pa.float64()),
        ("split", pa.string()),
    ]
)
SHOWN_REJECTS = 10  # quarantined rows listed in a summary
REQUIRED_METADATA = ("prompt", "title")  # RFNet reads the title as the caption; generation needs the prompt

PACKAGE_STOPS = (
    "this stops the run (--quarantine sets aside bad label lines, not packages): replace the package, or move it "
    "out of the folder to go on without its rows"
)
# Names that PurePosixPath would change or that may be unsafe; only these are checked one by one.
_SUSPICIOUS_NAME = r"^$|^[/\\]|^.:|\.\.|\\|//|(^|/)\.(/|$)|/$"


class DatasetError(InputError):
    """A dataset folder that cannot be imported: a missing or malformed file, an empty package."""


class BadLineError(DatasetError):
    """A line of an input file that fails a check; the message names file, line, text and reason."""

    def __init__(self, file: str, line: int, text: str, reason: str, more: int = 0) -> None:
        self.file, self.line, self.text, self.reason = file, line, text, reason
        message = f"{file}:{line}: {reason}; line: {text!r}"
        if more:
            message += f" ({more} more bad line(s); --quarantine, or data.import.quarantine: true, lists them all)"
        super().__init__(message)


class ImportSummary(BaseModel):
    """What an import did; rows_in == rows_accepted + rows_quarantined always."""

    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    blank_lines: int
    labels: dict[str, int]
    splits: dict[str, int]
    rejected: dict[str, int]  # check -> rows quarantined by it
    quarantined: list[str]  # the first rows quarantined, as `first_rejects` prints them
    manifest: str
    rejects: str | None
    seconds: float
    rows_per_s: float


def import_dataset(root: Path, cfg: ImportConfig, out: Path | None = None) -> ImportSummary:
    """Read `root` into one manifest Parquet (default root/manifest.parquet); see the module docstring."""
    started = time.perf_counter()
    out = out or root / layout.MANIFEST_FILE
    lines, blank = read_label_lines(root / layout.LABEL_FILE, cfg.header)
    if len(lines) == 0:
        raise DatasetError(f"{root / layout.LABEL_FILE}: no rows")
    rows = _Rows(lines)
    rows.parse(cfg.separator, cfg.max_name_length)
    rows.reject_duplicates()
    rows.parse_labels()
    rows.locate_files(FileIndex(root) if cfg.check_files else None)
    rows.join_metadata(read_metadata(root / layout.METADATA_FILE, cfg.require_metadata), cfg.require_metadata)
    rows.assign_splits(cfg)

    rejected = rows.rejected()
    if rejected and not cfg.quarantine:
        first = rejected[0]
        raise BadLineError(layout.LABEL_FILE, first["line"], first["text"], first["reason"], len(rejected) - 1)
    manifest = rows.manifest()
    if len(manifest) + len(rejected) != len(lines):
        raise RuntimeError(f"row count broken: {len(lines)} in, {len(manifest)} accepted, {len(rejected)} rejected")

    rejects_path = out.parent / layout.REJECTS_FILE if cfg.quarantine else None
    _write_atomically(out, rejects_path, manifest, rejected)
    seconds = time.perf_counter() - started
    return ImportSummary(
        rows_in=len(lines),
        rows_accepted=len(manifest),
        rows_quarantined=len(rejected),
        blank_lines=blank,
        labels=_counts(manifest.column("label")),
        splits=_counts(manifest.column("split")),
        rejected=dict(sorted(Counter(r["check"] for r in rejected).items())),
        quarantined=first_rejects(rejected),
        manifest=str(out),
        rejects=str(rejects_path) if rejects_path else None,
        seconds=round(seconds, 3),
        rows_per_s=round(len(lines) / max(seconds, 1e-9), 1),
    )


def first_rejects(rejects: list[dict[str, Any]]) -> list[str]:
    """The first quarantined rows as a person reads them, "label.txt line N: reason"; the rest are in the
    rejects file the summary names."""
    return [f"{layout.LABEL_FILE} line {r['line']}: {r['reason']}" for r in rejects[:SHOWN_REJECTS]]


def read_label_lines(path: Path, header: bool = False) -> tuple[pa.Table, int]:
    """The non-blank lines of label.txt as a table (line, text) and the number of blank lines skipped.

    Bytes that are not UTF-8 are replaced by U+FFFD, and such lines are rejected later, so one bad byte does
    not hide the rest of the file.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: label file not found")
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n"))
    lines = pc.utf8_rtrim(lines, characters="\r")
    numbers = pa.array(np.arange(1, len(lines) + 1, dtype=np.int64))
    table = pa.table({"line": numbers, "text": lines})
    if header and len(table):
        table = table.slice(1)
    blank = pc.equal(pc.utf8_trim_whitespace(table.column("text")), "")
    kept = table.filter(pc.invert(blank))
    trailing = 1 if text.endswith("\n") else 0  # the empty string after the last line break is no line
    return kept, len(table) - len(kept) - trailing


def read_metadata(path: Path, required: bool) -> pa.Table | None:
    """metadata.jsonl as a table with METADATA_SCHEMA (other fields ignored), or None when there is none."""
    if not path.is_file():
        if required:
            raise DatasetError(
                f"{path}: metadata file not found; set data.import.require_metadata: false (or --no-require-metadata) "
                "to import without it (titles and prompts left empty)"
            )
        return None
    options = pajson.ParseOptions(explicit_schema=METADATA_SCHEMA, unexpected_field_behavior="ignore")
    try:
        table = pajson.read_json(path, parse_options=options)
    except pa.ArrowInvalid as error:
        _raise_first_metadata_error(path)
        raise DatasetError(f"{path}: cannot read ({error})") from error
    images = table.column("image")
    if images.null_count or pc.count_distinct(images).as_py() != len(images):
        _raise_first_metadata_error(path)
    return table


def _raise_first_metadata_error(path: Path) -> None:
    """Find the first bad line of metadata.jsonl by reading it line by line, and raise its error."""
    first_seen: dict[str, int] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            reason, image = _metadata_line_problem(text)
            if reason is None and image in first_seen:
                reason = f"duplicate entry for image {image!r} (first at line {first_seen[image]})"
            if reason is not None:
                raise BadLineError(layout.METADATA_FILE, number, text.rstrip("\n"), reason)
            first_seen[image] = number


def _metadata_line_problem(text: str) -> tuple[str | None, str]:
    """(reason, image) for one metadata line; reason is None when the line is well formed."""
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg})", ""
    if not isinstance(entry, dict):
        return "not a JSON object", ""
    image = entry.get("image")
    if not isinstance(image, str) or not image:
        return "field 'image' is missing or not a non-empty string", ""
    for name in METADATA_SCHEMA.names:
        value = entry.get(name)
        expected: Any = (int, float) if name == "height_cm" else str
        if value is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            return f"field {name!r} must be a {'number' if name == 'height_cm' else 'string'}, got {value!r}", image
    return None, image


class FileIndex:
    """The files of a dataset folder, listed once: plain files per top folder and the members of packages.

    Packages are the *.zip / *.tar / *.tar.gz / *.tgz files directly in the root; their members are listed in
    place, never unpacked.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: dict[str, set[str]] = {}
        self.packages: dict[str, set[str]] = {}
        for path in sorted(root.iterdir()):
            if path.is_file() and layout.is_archive(path.name):
                self.packages[path.name] = set(_package_members(path))

    def folder(self, top: str) -> set[str]:
        """Relative paths ('top/…') of the files under root/top."""
        if top not in self._folders:
            base = self.root / top
            self._folders[top] = {
                (Path(dirpath) / name).relative_to(self.root).as_posix()
                for dirpath, _, names in os.walk(base)
                for name in names
            }
        return self._folders[top]

    def has_file(self, relative: str) -> bool:
        """Is `relative` a file under the root? False for a path that leaves the root."""
        try:
            relative = layout.safe_relative(relative, "path")
        except layout.UnsafePath:
            return False
        top, _, rest = relative.partition("/")
        return relative in self.folder(top) if rest else (self.root / relative).is_file()

    def member_lookup(self) -> tuple[pa.Array, pa.Array, pa.Array]:
        """(key, package, member) arrays. A member is found by its path, or by its path minus the first folder
        when that folder wraps the layout (`images/<name>` is found as `<name>`, `part_01/products/<name>` as
        `products/<name>`); `products/`, `depth/` and `saliency/` are never stripped, so that no product or map
        is taken for a generated image of the same name. For a key found twice, a member's own path wins over
        a stripped one, then the first package in name order, then the first member in name order (lookups
        with `pc.index_in` take the first match)."""
        names = [sorted(members) for members in self.packages.values()]
        members = pa.array([m for ordered in names for m in ordered], pa.string())
        package_names = np.array(list(self.packages), dtype=object)
        packages = pa.array(np.repeat(package_names, [len(ordered) for ordered in names]), pa.string())
        parts = pc.extract_regex(members, r"^(?P<top>[^/]*)/(?P<inner>.+)$")
        kept = pa.array([layout.PRODUCTS_DIR, layout.DEPTH_DIR, layout.SALIENCY_DIR])
        strippable = pc.and_(pc.is_valid(parts), pc.invert(pc.is_in(pc.struct_field(parts, "top"), kept)))
        strippable = pc.fill_null(strippable, False)
        inner = pc.struct_field(parts.filter(strippable), "inner")
        return (
            pa.concat_arrays([members, inner]),
            pa.concat_arrays([packages, packages.filter(strippable)]),
            pa.concat_arrays([members, members.filter(strippable)]),
        )


def _package_members(package: Path) -> list[str]:
    """The members of a package. One that cannot be read stops the run, naming it and why: which of its rows
    are gone is not known, so there is nothing to quarantine."""
    kind = "zip" if package.suffix == ".zip" else "tar"
    try:
        members = list_members(package)
    except PACKAGE_ERRORS as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())  # tarfile's reasons span lines
        raise DatasetError(f"{package}: not a readable {kind} package ({reason}); {PACKAGE_STOPS}") from error
    if not members:
        raise DatasetError(f"{package}: package has no members; {PACKAGE_STOPS}")
    return members


class _Rows:
    """label.txt rows under check: columns as pyarrow arrays, a mask of the rows still fine, and the reason
    of each failed row (a row keeps the reason of the first check it failed)."""

    def __init__(self, lines: pa.Table) -> None:
        self.columns: dict[str, pa.Array] = {
            "text": lines.column("text").combine_chunks().cast(pa.string()),
            "source_line": lines.column("line").combine_chunks(),
        }
        self.ok = np.ones(len(lines), bool)
        self.reasons: dict[int, tuple[str, str]] = {}

    def reject(self, bad: Any, check: str, template: str, *names: str) -> None:
        """Fail the rows in `bad` that are still fine, with `template` formatted from their `names` columns."""
        rows = np.flatnonzero(_mask(bad) & self.ok)
        values = {name: self.columns[name].take(pa.array(rows, pa.int64())).to_pylist() for name in names}
        for j, row in enumerate(rows):
            self.reasons[int(row)] = (check, template.format(**{n: v[j] for n, v in values.items()}))
        self.ok[rows] = False

    def parse(self, separator: str, max_length: int) -> None:
        """Split lines into name and label token; check that the name is a safe relative path."""
        text = self.columns["text"]
        self.reject(pc.match_substring(text, "\ufffd"), "encoding", "not valid UTF-8")
        sep = f"\\x{{{ord(separator):x}}}"
        fields = pc.extract_regex(text, f"^(?P<name>[^{sep}]*){sep}(?P<token>[^{sep}]*)$")
        self.columns["fields"] = pc.add(pc.count_substring(text, separator), 1)
        expected = f"expected 2 fields (<image name>, <label>) separated by {separator!r}, got {{fields}}"
        self.reject(pc.is_null(fields), "format", expected, "fields")
        name = pc.utf8_trim_whitespace(pc.struct_field(fields, "name"))
        self.columns["name"] = name
        self.columns["token"] = pc.struct_field(fields, "token")
        self.reject(pc.equal(name, ""), "name", "empty image name")
        self.reject(pc.greater(pc.utf8_length(name), max_length), "name", f"image name over {max_length} characters")

        suspicious = np.flatnonzero(_mask(pc.match_substring_regex(name, _SUSPICIOUS_NAME)) & self.ok)
        if len(suspicious):
            names = name.to_pylist()
            for row in suspicious:
                try:
                    names[row] = layout.safe_relative(names[row], "image name")
                except layout.UnsafePath as error:
                    self.reasons[int(row)] = ("name", str(error))
                    self.ok[row] = False
            self.columns["name"] = pa.array(names, pa.string())
        self.columns["id"] = pc.replace_substring_regex(self.columns["name"], r"^(.*[^/])\.[^./]+$", r"\1")

    def reject_duplicates(self) -> None:
        """The second and later rows with an id already seen are rejected, naming the line of the first."""
        codes = pc.fill_null(pc.dictionary_encode(self.columns["id"]).indices, -1).to_numpy()
        codes = np.where(self.ok, codes, -1)
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        first_of_row = first[inverse]
        self.columns["first_line"] = self.columns["source_line"].take(pa.array(first_of_row))
        duplicate = (codes >= 0) & (first_of_row != np.arange(len(codes)))
        self.reject(
            duplicate, "duplicate", "duplicate image id {id!r} (first at line {first_line})", "id", "first_line"
        )

    def parse_labels(self) -> None:
        """Labels through `labels.parse_label`, once per distinct token."""
        encoded = pc.dictionary_encode(self.columns["token"])
        ids, names, reasons = zip(*[_parse_token(t) for t in encoded.dictionary.to_pylist()], strict=True)
        position = encoded.indices
        self.columns["label_id"] = pa.array(ids, pa.int8()).take(position)
        self.columns["label"] = pa.array(names, pa.string()).take(position)
        self.columns["label_reason"] = pa.array(reasons, pa.string()).take(position)
        self.reject(pc.is_valid(self.columns["label_reason"]), "label", "{label_reason}", "label_reason")

    def join_metadata(self, metadata: pa.Table | None, required: bool) -> None:
        """Attach each row's metadata entry (by image name); check that it is there and its split is known."""
        fields = METADATA_SCHEMA.names[1:]
        if metadata is None:
            for name in fields:
                self.columns[name] = pa.nulls(len(self.ok), METADATA_SCHEMA.field(name).type)
            return
        position = pc.index_in(self.columns["name"], metadata.column("image"))
        for name in fields:
            self.columns[name] = metadata.column(name).combine_chunks().take(position)
        if required:
            self.reject(pc.is_null(position), "metadata", f"no entry for this image in {layout.METADATA_FILE}")
            for name in REQUIRED_METADATA:
                empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(self.columns[name]), ""), True)
                self.reject(empty, "metadata", f"the {layout.METADATA_FILE} entry has no {name!r}")
        known = pc.is_in(self.columns["split"], pa.array(layout.SPLITS))
        unknown = pc.and_(pc.is_valid(self.columns["split"]), pc.invert(known))
        splits = ", ".join(layout.SPLITS)
        self.reject(unknown, "split", f"metadata split {{split!r}} is not one of {splits}", "split")

    def locate_files(self, files: FileIndex | None) -> None:
        """Find each row's image, product and optional maps: in their folder first, then in the packages.

        The image is images/<name>, or the package member <name> or images/<name>; the product and the maps
        are <folder>/<name> or <folder>/<stem>.png, as a file or a package member. A row without image or
        product is rejected, naming where it was looked for."""
        name = self.columns["name"]
        no_path = pa.nulls(len(name), pa.string())
        if files is None:  # trust the layout
            self.columns["image"] = _prefixed(layout.IMAGES_DIR, name)
            self.columns["product"] = _prefixed(layout.PRODUCTS_DIR, name)
            self.columns["depth"] = self.columns["saliency"] = no_path
            for kind in layout.FILE_KINDS:
                self.columns[layout.member_column(kind)] = no_path
            return
        lookup = files.member_lookup()
        images = _prefixed(layout.IMAGES_DIR, name)
        self._locate("image", files, lookup, [images], [name, images])
        where = f"neither in {layout.IMAGES_DIR}/ nor in any of the {len(files.packages)} package(s)"
        self.reject(pc.is_null(self.columns["image"]), "image", f"image {{name!r}} not found: {where}", "name")

        stem_png = pc.binary_join_element_wise(self.columns["id"], ".png", "")
        for kind in ("product", "depth", "saliency"):
            folder = layout.KIND_DIRS[kind]
            candidates = [_prefixed(folder, name), _prefixed(folder, stem_png)]
            self._locate(kind, files, lookup, candidates, candidates)
        where = f"neither a file nor a member of any of the {len(files.packages)} package(s)"
        missing = f"product image missing: {layout.PRODUCTS_DIR}/{{name}} is {where}"
        self.reject(pc.is_null(self.columns["product"]), "product", missing, "name")

    def _locate(
        self,
        kind: str,
        files: FileIndex,
        lookup: tuple[pa.Array, pa.Array, pa.Array],
        paths: list[pa.Array],
        keys: list[pa.Array],
    ) -> None:
        """Set the `kind` and `kind`_member columns: the first of `paths` that is a file, else the package
        member found by the first of `keys` that names one, else null."""
        listing = pa.array(sorted(files.folder(layout.KIND_DIRS[kind])), pa.string())
        plain = pc.coalesce(*[pc.if_else(pc.is_in(path, listing), path, None) for path in paths])
        names, packages, members = lookup
        found = pc.coalesce(*[pc.index_in(key, names) for key in keys])
        is_plain = pc.is_valid(plain)
        self.columns[kind] = pc.if_else(is_plain, plain, packages.take(found))
        self.columns[layout.member_column(kind)] = pc.if_else(is_plain, None, members.take(found))

    def assign_splits(self, cfg: ImportConfig) -> None:
        """Metadata split where given; else test for a held-out category, else val/train by product hash."""
        self.columns["product_id"] = pc.coalesce(self.columns["product_id"], self.columns["id"])
        in_val = hash_share(self.columns["product_id"], cfg.split_seed) < cfg.val_fraction
        by_hash = pc.if_else(pa.array(in_val), "val", "train")
        held_out = pc.is_in(self.columns["category"], pa.array(cfg.test_categories, pa.string()))
        self.columns["split"] = pc.coalesce(self.columns["split"], pc.if_else(held_out, "test", by_hash))

    def rejected(self) -> list[dict[str, Any]]:
        """The failed rows in line order, as rejects.jsonl records."""
        rows = pa.array(sorted(self.reasons), pa.int64())
        lines = self.columns["source_line"].take(rows).to_pylist()
        texts = self.columns["text"].take(rows).to_pylist()
        return [
            {"file": layout.LABEL_FILE, "line": line, "text": text, "reason": reason, "check": check}
            for line, text, (check, reason) in zip(
                lines, texts, (self.reasons[r] for r in rows.to_pylist()), strict=True
            )
        ]

    def manifest(self) -> pa.Table:
        keep = pa.array(self.ok)
        columns = [self.columns[f.name].filter(keep).cast(f.type) for f in layout.manifest_schema()]
        return pa.Table.from_arrays(columns, schema=layout.manifest_schema())


def _parse_token(token: str | None) -> tuple[int | None, str | None, str | None]:
    """(label id, label, reason it is not a label) of one label token; all None for a line without one."""
    if token is None:
        return None, None, None
    try:
        label_id, label = parse_label(token)
    except ValueError as error:
        return None, None, str(error)
    return label_id, label, None


def _mask(values: Any) -> NDArray[np.bool_]:
    """A pyarrow or numpy boolean column as a numpy mask (null = False)."""
    if isinstance(values, np.ndarray):
        return values.astype(bool)
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _prefixed(folder: str, names: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(f"{folder}/", names, "")


def hash_share(strings: pa.Array, seed: int) -> NDArray[np.float64]:
    """A number in [0, 1) per string, from 64-bit FNV-1a of '<string>\\x1f<seed>' in UTF-8 and murmur3's final
    mix: the same in every process, run and version (unlike Python's `hash`), and vectorised.

    FNV-1a is byte-serial, so it runs over byte positions for all strings at once; with the longest strings
    first, the strings still going at byte k are a prefix.
    """
    keyed = pc.binary_join_element_wise(pc.fill_null(strings, ""), f"\x1f{seed}", "").cast(pa.large_string())
    offsets = np.frombuffer(keyed.buffers()[1], np.int64)[keyed.offset : keyed.offset + len(keyed) + 1]
    data = np.frombuffer(keyed.buffers()[2], np.uint8)
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")
    starts = offsets[:-1][order]
    going = np.searchsorted(-lengths[order], -np.arange(lengths.max(initial=0)), side="left")
    h = np.full(len(keyed), 0xCBF29CE484222325, np.uint64)
    for k, n in enumerate(going):
        h[:n] = (h[:n] ^ data[starts[:n] + k]) * np.uint64(0x100000001B3)
    for shift, factor in ((33, 0xFF51AFD7ED558CCD), (33, 0xC4CEB9FE1A85EC53)):
        h ^= h >> np.uint64(shift)
        h *= np.uint64(factor)
    h ^= h >> np.uint64(33)
    mixed = np.empty_like(h)
    mixed[order] = h
    return (mixed >> np.uint64(11)).astype(np.float64) / 2.0**53


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(column).to_pylist()
    return {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: str(c["values"]))}


def _write_atomically(
    manifest_path: Path, rejects_path: Path | None, manifest: pa.Table, rejected: list[dict[str, Any]]
) -> None:
    """Write to temporary siblings, then rename: a failure leaves any earlier manifest as it was."""
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = manifest_path.with_name(f".{manifest_path.name}.{os.getpid()}.tmp")
    pending = [(temporary, manifest_path)]
    try:
        pq.write_table(manifest, temporary)
        if rejects_path is not None:
            rejects_tmp = rejects_path.with_name(f".{rejects_path.name}.{os.getpid()}.tmp")
            pending.append((rejects_tmp, rejects_path))
            rejects_tmp.write_text("".join(json.dumps(r) + "\n" for r in rejected))
        for source, target in pending:
            source.replace(target)
    finally:
        for source, _ in pending:
            source.unlink(missing_ok=True)
