"""`candlewax recovery-init`: this process's share of the Bytewax recovery partitions.

Bytewax needs the cluster as a whole to hold every recovery partition, any one process
none in particular. With a volume per pod (a StatefulSet), pod `i` of `P` keeps
partitions `i, i + P, i + 2P, ...` of `N`; this creates them on the first start and
leaves existing ones alone, so a restarted pod resumes from its own.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bytewax.recovery import init_db_dir

from candlewax.cluster import process_id
from config.settings import Settings


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument("directory", type=Path, help="this process's recovery directory")
    parser.add_argument(
        "--partitions",
        type=int,
        required=True,
        help="recovery partitions of the whole cluster (fixed once created; "
        "pick the most workers you will ever scale to)",
    )
    parser.add_argument("--processes", type=int, default=1, help="processes in the cluster")
    parser.add_argument(
        "--index",
        type=int,
        default=None,
        help="this process's id (default: from -i, BYTEWAX_PROCESS_ID or the pod name)",
    )


def init_share(directory: Path, partitions: int, processes: int, index: int) -> list[str]:
    """Create this process's partitions unless any exist; returns the files now there."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = sorted(p.name for p in directory.glob("part-*.sqlite3"))
    if existing:
        return existing
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        init_db_dir(Path(scratch), partitions)
        for number in range(index, partitions, processes):
            shutil.move(str(Path(scratch) / f"part-{number}.sqlite3"), directory)
    return sorted(p.name for p in directory.glob("part-*.sqlite3"))


def run(args: argparse.Namespace) -> int:
    index = process_id() if args.index is None else args.index
    if not 0 <= index < args.processes <= args.partitions:
        print("candlewax recovery-init: need 0 <= index < processes <= partitions", file=sys.stderr)
        return 2
    files = init_share(args.directory, args.partitions, args.processes, index)
    print(f"{args.directory}: {', '.join(files)}")
    return 0
