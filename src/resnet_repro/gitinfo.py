"""What git says about the checkout a folder lies in: the one place that asks git (`git rev-parse HEAD`
for the commit, `git status --porcelain` for what differs from it)."""

import subprocess
from pathlib import Path


def _git(folder: Path, *arguments: str) -> str | None:
    """The output of `git -C folder ...`, or None where git cannot answer (no checkout, no commit, no git)."""
    try:
        result = subprocess.run(["git", "-C", str(folder), *arguments], capture_output=True, text=True,
                                check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout


def git_commit(folder: Path) -> str | None:
    """The full hash of the commit checked out where `folder` lies, or None outside a git checkout (an
    installed wheel), in a repository without a commit, or without git."""
    output = _git(folder, "rev-parse", "HEAD")
    return None if output is None else output.strip()


def changed_files(folder: Path, *, inside_folder: bool = False, untracked: bool = True) -> list[str] | None:
    """The paths, relative to the repository's root, that differ from the checked-out commit (all of the
    repository's, or with `inside_folder` only those under `folder`; untracked files too unless
    `untracked` is False), or None where git cannot say."""
    output = _git(folder, "status", "--porcelain", f"--untracked-files={'normal' if untracked else 'no'}",
                  *(["--", "."] if inside_folder else []))
    # Porcelain lines are "XY path" (renames "XY old -> new"); the path is what a message names.
    return None if output is None else [line[3:] for line in output.splitlines()]
