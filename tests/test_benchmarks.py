"""The benchmark commands the README quotes figures from, run as a user runs them with --json, at a few
steps: each prints one JSON object (and nothing else) on stdout, with every key the README names and
positive rates. No speed is asserted: a test cannot know how fast this machine is, or how busy.

`bench startup` has its own test in test_startup.py. Each run here loads the whole real CIFAR-10
training set and, for FFCV, writes it to a .beton first (what the commands do), so they are `slow`;
the refusal at the end answers before any of that.
"""

import json
from pathlib import Path

import pytest

from projects import committed_file, run
from resnet_repro.cli import main
from resnet_repro.config import load_params
from resnet_repro.device import autocast_dtype, cpu_has_native_bf16, resolve_compile, resolve_device

# The project's params.yaml as committed (the paper's recipe): the working tree's may hold a user's
# experiment or another recipe (`resnet-repro recipe select cifar-cosine`, docs/models.md).
PARAMS = committed_file("params.yaml")
DEVICE = resolve_device("auto")  # where the benchmarks run by default: the GPU if there is one


def finite_json(text: str) -> dict:
    """One JSON object; Python's json would take NaN and Infinity (a rate of 0 images in 0 seconds)."""
    def refuse(constant: str):
        raise AssertionError(f"the benchmark printed {constant}:\n{text}")

    return json.loads(text, parse_constant=refuse)


def bench(tmp_path: Path, *arguments: str) -> dict:
    """`resnet-repro bench ARGUMENTS --json` in an empty directory; its stdout must be the JSON alone."""
    return finite_json(run(["resnet-repro", "bench", *arguments, "--params", str(PARAMS), "--json"], tmp_path,
                           timeout=1200).stdout)


@pytest.mark.slow
def test_bench_train_prints_both_rates_and_their_ratio(tmp_path, cifar10_archive):
    result = bench(tmp_path, "train", "--archive", str(cifar10_archive), "--batch-size", "16", "--workers", "1",
                   "--warmup-steps", "2", "--steps", "2")
    assert result.keys() == {"img_per_s", "baseline_img_per_s", "speedup", "settings"}
    assert result["img_per_s"] > 0 and result["baseline_img_per_s"] > 0
    assert result["speedup"] == pytest.approx(result["img_per_s"] / result["baseline_img_per_s"])
    settings = result["settings"]
    given = {"model": "resnet20", "batch_size": 16, "workers": 1, "backend": "ffcv", "precision": "auto",
             "channels_last": True, "compile": "auto", "warmup_steps": 2, "timed_steps": 2}
    resolved = {"precision_resolved", "compile_resolved", "torch_threads", "cpu_native_bf16"}
    assert settings.keys() == given.keys() | resolved | {"device"}
    assert {key: settings[key] for key in given} == given
    assert settings["device"] == str(DEVICE)
    auto = autocast_dtype("auto", DEVICE)
    assert settings["precision_resolved"] == (str(auto).removeprefix("torch.") if auto else "float32")
    assert settings["compile_resolved"] == resolve_compile("auto", DEVICE)
    assert settings["cpu_native_bf16"] == cpu_has_native_bf16()
    assert settings["torch_threads"] >= 1


@pytest.mark.slow
def test_bench_train_compare_precision_prints_both_test_errors(tmp_path, cifar10_archive):
    result = bench(tmp_path, "train", "--compare-precision", "--iterations", "4", "--archive", str(cifar10_archive),
                   "--batch-size", "16", "--workers", "0")
    assert result.keys() == {"model", "iterations", "batch_size", "seed", "device", "fp32_test_error",
                             "bf16_test_error", "fp32_train_seconds", "bf16_train_seconds", "max_difference"}
    assert (result["model"], result["iterations"], result["batch_size"], result["device"]) == \
        ("resnet20", 4, 16, str(DEVICE))
    for precision in ("fp32", "bf16"):
        assert 0 < result[f"{precision}_test_error"] <= 1  # 4 steps of ResNet-20 are not enough for no error
        assert result[f"{precision}_train_seconds"] > 0
    assert result["max_difference"] == pytest.approx(abs(result["fp32_test_error"] - result["bf16_test_error"]))


@pytest.mark.slow
def test_bench_loader_prints_the_rate_of_each_pipeline(tmp_path, cifar10_archive):
    result = bench(tmp_path, "loader", "--archive", str(cifar10_archive), "--batch-size", "16", "--workers", "0",
                   "--warmup-batches", "2", "--batches", "2")
    assert result.keys() == {"dataset", "ffcv_img_per_s", "torch_img_per_s", "torchvision_img_per_s",
                             "ffcv_over_torchvision", "batch_size", "workers", "timed_batches"}
    assert (result["dataset"], result["batch_size"], result["workers"], result["timed_batches"]) == \
        ("cifar10", 16, 0, 2)
    rates = {pipeline: result[f"{pipeline}_img_per_s"] for pipeline in ("ffcv", "torch", "torchvision")}
    assert all(rate > 0 for rate in rates.values()), rates
    assert result["ffcv_over_torchvision"] == pytest.approx(result["ffcv_img_per_s"] / result["torchvision_img_per_s"])


def test_compare_precision_refuses_too_few_iterations_for_the_recipes_lr_steps(capsys, tmp_path):
    train = load_params(PARAMS).train  # the paper's: /10 at 32k and 48k of 64k iterations
    shrunk = [milestone * 2 // train.iterations for milestone in train.milestones]
    assert shrunk == [1, 1]
    code = main(["bench", "train", "--compare-precision", "--iterations", "2", "--params", str(PARAMS),
                 "--archive", str(tmp_path / "never-read.tar.gz")])
    assert code == 2
    assert capsys.readouterr().err == (f"resnet-repro bench: error: iterations = 2: too few for the recipe's lr steps, "
                                       f"whose milestones {train.milestones} of {train.iterations} iterations "
                                       f"shrink to {shrunk}\n")
