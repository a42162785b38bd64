"""Whole files as bytes, decompressing `.gz`, `.zst` and single-member `.zip` on the way."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import pyarrow as pa

COMPRESSED_SUFFIXES = (".gz", ".zst", ".zip")


def read_bytes(path: Path) -> bytes:
    suffix = path.suffix.lower()
    if suffix == ".gz":
        with gzip.open(path, "rb") as stream:
            return stream.read()
    if suffix == ".zst":
        with pa.CompressedInputStream(pa.OSFile(str(path)), "zstd") as stream:
            return stream.read()
    if suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise ValueError(
                    f"{path}: expected one file in the zip archive, found {len(members)}"
                )
            return archive.read(members[0])
    return path.read_bytes()


def base_name(path: Path) -> str:
    """The file name without compression suffix: `BTCUSDT-trades-2024-08-08.csv.zip` ->
    `BTCUSDT-trades-2024-08-08.csv`."""
    name = path.name
    for suffix in COMPRESSED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
