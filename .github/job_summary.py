"""The CI job's summary: this run's metrics and params against the base branch's committed ones.

    python .github/job_summary.py origin/main [--log main-job.log] >> "$GITHUB_STEP_SUMMARY"

Run in the workspace the main job (`scripts/cpu-study.sh`) left behind. That job's `dvc exp run
--set-param` leaves its reduced-scale values in the working tree's params.yaml, so the working tree is
"this run", HEAD is what the branch commits and BASE is what the base branch commits. The params are
shown in two steps, base -> HEAD (what the branch changes) and HEAD -> this run (what the job set on
top), so that a change the branch makes is not lost among the job's own overrides. The metrics are
compared base -> this run; a base with no committed metrics (a fork's usual state: `dvc.lock` and the
metrics files are outputs nobody committed) is said as such. Prints Markdown (DVC's own `--md`
tables) to stdout; exits non-zero, naming the command, if a DVC or git command fails.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

# DVC's words for a stage its run-cache restored instead of running (dvc/stage/cache.py).
RESTORED_STAGE = re.compile(r"^Stage '([^']+)' is cached - skipping run", re.MULTILINE)


def run(*command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"job_summary.py: `{' '.join(command)}` failed ({result.returncode}):\n{result.stderr}")
    return result


def dvc(*arguments: str) -> subprocess.CompletedProcess:
    """DVC of the Python running this script (the project's venv), whatever PATH holds."""
    return run(sys.executable, "-m", "dvc", *arguments)


def short_commit(rev: str) -> str:
    return run("git", "rev-parse", "--short", rev).stdout.strip()


def params_section(title: str, old: str, new: list[str], none: str) -> str:
    changed = json.loads(dvc("params", "diff", old, *new, "--json").stdout or "{}")
    table = dvc("params", "diff", old, *new, "--md").stdout.strip() if changed else none
    return f"### {title}\n\n{table}\n"


def metrics_section(base: str) -> str:
    compared = dvc("metrics", "diff", base, "--all", "--json")
    every_metric = json.loads(compared.stdout or "{}")
    values = [value for metrics in every_metric.values() for value in metrics.values()]
    title = f"### Metrics: `{base}` (committed) → this run\n\n"
    if not any(value["old"] is not None for value in values):
        return (title + f"`{base}` has no committed metrics (no `dvc.lock` and no metrics files in git at that "
                "commit: a fork's usual state), so there is nothing to compare with. This run's metrics:\n\n"
                + dvc("metrics", "show", "--md").stdout.strip() + "\n")
    section = title
    if any(value["old"] != value["new"] for value in values):
        section += dvc("metrics", "diff", base, "--md").stdout.strip() + "\n"
    else:
        section += f"All {len(values)} metrics equal `{base}`'s.\n"
    # DVC reads a base's DVC-tracked metrics (train.json) through its cache; it says which it could not load.
    not_loaded = [line for line in compared.stderr.splitlines() if "failed to load" in line]
    if not_loaded:
        section += ("\nDVC: " + " ".join(not_loaded)
                    + " (`-` above: not committed in git, or not in this runner's DVC cache)\n")
    return section


def restored_section(log: Path) -> str:
    stages = RESTORED_STAGE.findall(log.read_text())
    listed = ", ".join(f"`{stage}`" for stage in stages) if stages else "none: every stage ran"
    return f"Stages DVC's run-cache restored instead of running (the cached `.dvc/cache`): {listed}.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the base branch's git revision, e.g. origin/main")
    parser.add_argument("--log", type=Path, help="the main job's output, to list the stages restored from the cache")
    arguments = parser.parse_args()
    base = arguments.base

    print(f"## This run against `{base}`\n")
    print(f"This run: `{short_commit('HEAD')}` with the main job's values on top; base: `{base}` at "
          f"`{short_commit(base)}`.\n")
    if arguments.log:
        print(restored_section(arguments.log))
    print(metrics_section(base))
    print(params_section(f"Params this branch commits: `{base}` → `HEAD`", base, ["HEAD"],
                         "None: `HEAD` commits the same params as the base branch."))
    print(params_section("Params the main job set on top: `HEAD` → this run", "HEAD", [],
                         "None: the main job ran with the committed params."))


if __name__ == "__main__":
    main()
