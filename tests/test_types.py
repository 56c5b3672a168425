"""Static types: mypy, with the configuration in pyproject.toml ([tool.mypy]), finds no error in src/ or tests/.

The checker reaches code that no test run on this machine does: test_cuda.py, skipped without a GPU, once
called `fit` with the arguments of a signature `fit` no longer had, and nothing failed.
"""

import subprocess
import sys

from projects import REPOSITORY


def test_mypy_finds_no_errors_in_src_and_tests():
    # No arguments: the files and options are pyproject.toml's. mypy's cache (.mypy_cache/) makes a rerun
    # after small changes take seconds.
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPOSITORY, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"mypy exited {result.returncode}:\n{result.stdout}{result.stderr}"
