"""The command line answers `--help` without importing the heavy libraries, and the benchmarks take their
settings from params.yaml, an option given replacing its value."""

import json
import subprocess
import sys

from projects import committed_file, params_with
from resnet_repro.cli import _given, _train_bench_settings, build_parser, main
from resnet_repro.config import parse_params

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


def test_bench_options_left_out_take_the_values_of_params_and_given_ones_replace_them():
    from resnet_repro.data.bench import BenchSettings

    # Values unlike the committed ones, so that a setting of the wrong key, or of a literal, shows.
    params = parse_params(params_with({"train": {"batch_size": 96, "precision": "fp32", "channels_last": False,
                                                 "compile": True, "device": "cpu"},
                                       "loader": {"num_workers": 3, "backend": "torch"}}))
    parser = build_parser()
    left_out = _train_bench_settings(parser.parse_args(["bench", "train"]), params)
    assert (left_out.batch_size, left_out.workers, left_out.backend, left_out.precision, left_out.channels_last,
            left_out.compile, left_out.device) == (96, 3, "torch", "fp32", False, True, "cpu")
    assert (left_out.model, left_out.warmup_steps, left_out.timed_steps) == ("resnet20", 20, 60)
    args = parser.parse_args(["bench", "train", "--batch-size", "16", "--workers", "0", "--backend", "ffcv",
                              "--channels-last", "--steps", "7"])
    given = _train_bench_settings(args, params, **_given(args, "channels_last"))
    assert (given.batch_size, given.workers, given.backend, given.channels_last, given.timed_steps) == \
        (16, 0, "ffcv", True, 7)
    assert (given.precision, given.warmup_steps) == ("fp32", 20)

    loader_args = parser.parse_args(["bench", "loader", "--batches", "3"])
    loader = BenchSettings.from_params(params, warmup_batches=loader_args.warmup_batches,
                                       timed_batches=loader_args.timed_batches, **_given(loader_args, "batch_size",
                                                                                        "workers"))
    assert (loader.batch_size, loader.workers, loader.timed_batches) == (96, 3, 3)


def test_a_bench_option_out_of_range_is_refused_naming_it(capsys, tmp_path):
    code = main(["bench", "train", "--workers", "-1", "--archive", str(tmp_path / "never-read.tar.gz"),
                 "--params", str(committed_file("params.yaml"))])
    assert (code, capsys.readouterr().err) == (2, "resnet-repro bench: error: --workers = -1: must be > 0\n")


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
