"""The git commit a folder is checked out at: the one place that asks git (`git rev-parse HEAD`)."""

import subprocess
from pathlib import Path


def git_commit(folder: Path) -> str | None:
    """The full hash of the commit checked out where `folder` lies, or None outside a git checkout (an
    installed wheel), in a repository without a commit, or without git."""
    try:
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()
