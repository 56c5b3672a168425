"""Atomic file writes: a reader (or a killed writer) never sees a half-written output.

Each write goes to a temporary file in the same directory, is flushed to disk, then renamed over the
target, which POSIX makes atomic.
"""

import contextlib
import csv
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, Sequence


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary_path)`` (its result is ignored), fsync it, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def write_tsv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Fill a temporary sibling directory, then swap it in for `target` only if the block succeeds.

    A killed or failed stage leaves at most a hidden `.<name>.partial` directory, never a `target`
    that looks complete but is not.
    """
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
