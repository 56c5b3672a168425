"""The command line answers `--help` without importing the heavy libraries, and the benchmarks' options
keep their settings classes' defaults."""

import json
import subprocess
import sys

from resnet_repro.cli import _settings, build_parser

HEAVY = ("torch", "mlflow", "ffcv", "numba")

# Builds the parser, prints each help, and reports which heavy libraries got imported.
_HELP_PROCESS = """
import contextlib, io, json, sys
from resnet_repro.cli import build_parser
for argv in (["--help"], ["models", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.suppress(SystemExit):
        build_parser().parse_args(argv)
    assert "usage: resnet-repro" in printed.getvalue(), argv
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:]))))
"""


def test_help_imports_none_of_the_heavy_libraries():
    result = subprocess.run([sys.executable, "-c", _HELP_PROCESS, *HEAVY], capture_output=True, text=True,
                            check=True)
    assert json.loads(result.stdout) == []


def test_bench_options_left_out_keep_the_settings_defaults():
    from resnet_repro.benchmarks import TrainBenchSettings
    from resnet_repro.data.bench import BenchSettings

    parser = build_parser()
    assert _settings(TrainBenchSettings, parser.parse_args(["bench", "train"])) == TrainBenchSettings()
    given = _settings(TrainBenchSettings, parser.parse_args(["bench", "train", "--steps", "7", "--no-channels-last"]))
    assert (given.timed_steps, given.channels_last, given.warmup_steps) == (7, False, TrainBenchSettings().warmup_steps)
    assert _settings(BenchSettings, parser.parse_args(["bench", "loader"])) == BenchSettings()
    assert _settings(BenchSettings, parser.parse_args(["bench", "loader", "--batches", "3"])).timed_batches == 3


def test_python_dash_m_runs_the_command_line_as_the_package_and_as_cli():
    # `python -m resnet_repro.cli` once stopped with a NameError: its __main__ block sat above functions it calls.
    def python_m(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, check=False)

    for module in ("resnet_repro", "resnet_repro.cli"):
        helped = python_m(module, "--help")
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.startswith("usage: resnet-repro") and "recipe" in helped.stdout
        listed = python_m(module, "study", "list")
        assert listed.returncode == 0 and "cifar-paper" in listed.stdout, listed.stderr
    refused = python_m("resnet_repro", "no-such-command")
    assert refused.returncode == 2 and "invalid choice: 'no-such-command'" in refused.stderr
