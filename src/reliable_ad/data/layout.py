"""The RF1M folder layout and the manifest every later stage reads.

A dataset folder (RF1M's release unpacked as far as it needs to be, or RF1M-synth)::

    label.txt          one line per generated image: <image name><sep><label>, label 1-6 or a class name
    metadata.jsonl     one JSON object per image: image, product_id, prompt, title (+ category, height_cm, split)
    images/            generated images
    products/          RGBA product cut-outs with the generated image's file name
    depth/, saliency/  optional maps with the same file name
    *.zip, *.tar, *.tar.gz, *.tgz
                       packages in the root holding any of the above as members (images/<name>,
                       products/<name>, depth/<name>, saliency/<name>, optionally under one more folder),
                       read in place; a folder is looked in before the packages

`rad data import` turns it into ``manifest.parquet`` with the columns below. Each file of a row has two
columns: its location, and its member. For a plain file the location is its path and the member is null; for
a package member the location is the package's file name and the member is the path inside the package.
Locations are relative to the dataset folder and never leave it.
"""

from __future__ import annotations

import functools
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from reliable_ad.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

LABEL_FILE = "label.txt"
METADATA_FILE = "metadata.jsonl"
MANIFEST_FILE = "manifest.parquet"
REJECTS_FILE = "rejects.jsonl"
IMAGES_DIR = "images"
PRODUCTS_DIR = "products"
DEPTH_DIR = "depth"
SALIENCY_DIR = "saliency"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
SPLITS = ("train", "val", "test")
FILE_KINDS = ("image", "product", "depth", "saliency")  # the files of a row, each a location + member column
KIND_DIRS = {"image": IMAGES_DIR, "product": PRODUCTS_DIR, "depth": DEPTH_DIR, "saliency": SALIENCY_DIR}


@functools.cache
def manifest_schema() -> pa.Schema:
    """The manifest's columns (pyarrow is imported here, so the layout's names cost nothing to import)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),  # the generated image's file name without extension
            ("image", pa.string()),  # file, or package holding the image (relative to the dataset folder)
            ("image_member", pa.string()),  # member inside the package; null for a plain file
            ("product", pa.string()),  # the RGBA product cut-out: file or package, as for the image
            ("product_member", pa.string()),
            ("product_id", pa.string()),
            ("label_id", pa.int8()),
            ("label", pa.string()),
            ("prompt", pa.string()),
            ("title", pa.string()),
            ("category", pa.string()),
            ("height_cm", pa.float32()),
            ("depth", pa.string()),  # optional maps: file or package, or null when the dataset has none
            ("depth_member", pa.string()),
            ("saliency", pa.string()),
            ("saliency_member", pa.string()),
            ("split", pa.string()),
            ("source_line", pa.int64()),  # line of label.txt the row came from
        ]
    )


class UnsafePath(InputError):
    """A path from user input that is absolute or climbs out of the data root."""


def safe_relative(name: str, where: str) -> str:
    """Check that `name` is a relative path staying inside its root; return it in POSIX form.

    `where` says where the name came from (file and line), for the error message.
    """
    path = PurePosixPath(name.replace("\\", "/"))
    if not name or path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafePath(f"{where}: path {name!r} is absolute; paths must be relative to the data root")
    if any(part == ".." for part in path.parts):
        raise UnsafePath(f"{where}: path {name!r} escapes the data root ('..')")
    return str(path)


def resolve_inside(root: Path, relative: str, where: str) -> Path:
    """`root / relative`, refusing anything (symlinks included) that resolves outside `root`."""
    rel = safe_relative(relative, where)
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise UnsafePath(f"{where}: path {relative!r} resolves outside the data root {root}")
    return full


def is_archive(name: str) -> bool:
    return name.endswith(ARCHIVE_SUFFIXES)


def member_column(kind: str) -> str:
    """The manifest column with the package member of a file kind ("image" -> "image_member")."""
    return f"{kind}_member"
