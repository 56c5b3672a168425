"""The train stage end to end on real data: divergence handling, and the speed-path settings."""

import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from test_resume import params_for

from projects import REPOSITORY, prepared_project
from resnet_repro import models
from resnet_repro.config import ConfigError, TrainParams, parse_params
from resnet_repro.device import resolve_compile
from resnet_repro.layout import Layout
from resnet_repro.train.optimizer import parameter_groups


def test_divergence_fails_the_stage_in_one_line_marks_the_run_failed_and_keeps_the_last_good_checkpoint(
        tmp_path, cifar10, cifar10_archive, store):
    from mlflow import MlflowClient

    root = prepared_project(tmp_path / "project", cifar10)
    shutil.copytree(REPOSITORY / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    params = params_for(cifar10_archive, lr=1e6, iterations=30, log_every=1, checkpoint_every=1, eval_every=0)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "pipeline/train.py", "--variant", "resnet20", "--seed", "0"], cwd=root,
                            capture_output=True, text=True, timeout=600)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    # The loss, or first the weights (BN statistics overflow before the loss does), become non-finite.
    matched = re.fullmatch(r"train: error: (loss is \S+|weights became non-finite) at iteration (\d+) \(lr 1e\+06\); "
                           r"the last good checkpoint is kept", message)
    assert matched, result.stderr[-2000:]
    diverged_at = int(matched.group(2))
    checkpoint = torch.load(Layout(root).checkpoint_path("resnet20", 0), weights_only=True)
    assert 1 <= checkpoint["iteration"] < diverged_at and not checkpoint["complete"]
    assert all(t.isfinite().all() for t in checkpoint["model"].values() if t.is_floating_point())
    run = MlflowClient(store).get_run(checkpoint["run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == f"TrainingDiverged: {message.removeprefix('train: error: ')}"
    assert not (Layout(root).model_dir("resnet20", 0) / "model.safetensors").exists()


def test_speed_path_defaults_and_one_line_errors(cifar10_archive):
    train = parse_params(params_for(cifar10_archive, deterministic=False)).train
    assert (train.channels_last, train.compile, train.cudnn_benchmark, train.no_weight_decay_on_bn_and_bias) == \
        (True, "auto", True, False)
    assert resolve_compile("auto", torch.device("cpu")) is False
    assert resolve_compile("auto", torch.device("cuda")) is True
    assert resolve_compile(True, torch.device("cpu")) is True
    with pytest.raises(ConfigError, match=r"^params.yaml: train.compile = 'sometimes': "):
        parse_params(params_for(cifar10_archive, compile="sometimes"), "params.yaml")
    with pytest.raises(ConfigError, match=r"^params.yaml: train.channels_last = 'maybe': "):
        parse_params(params_for(cifar10_archive, channels_last="maybe"), "params.yaml")


def test_weight_decay_exempts_only_bn_and_biases_when_asked(cifar10_archive):
    def train(exempt_bn_and_bias: bool) -> TrainParams:
        return parse_params(params_for(cifar10_archive, weight_decay=1e-4,
                                       no_weight_decay_on_bn_and_bias=exempt_bn_and_bias)).train

    model = models.build("resnet20")
    (everything,) = parameter_groups(model, train(False))
    assert len(everything["params"]) == len(list(model.parameters())) and everything["weight_decay"] == 1e-4
    decayed, exempt = parameter_groups(model, train(True))
    bn_and_bias = [p for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Linear))
                   for name, p in m.named_parameters(recurse=False) if isinstance(m, torch.nn.BatchNorm2d) or name == "bias"]
    assert {id(p) for p in exempt["params"]} == {id(p) for p in bn_and_bias} and exempt["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and decayed["weight_decay"] == 1e-4
