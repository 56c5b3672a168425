"""The zoo against the papers: Table 6 and Table 1 counts, torchvision parity, names, options."""

import argparse
import json

import pytest
import torch
import torchvision
from torch import nn

from resnet_repro.models import (
    Block,
    build,
    count_flops,
    count_params,
    describe,
    from_torchvision,
    layer_responses,
    names,
    spec,
)
from resnet_repro.models import cli as models_cli
from resnet_repro.models import torchvision_key
from resnet_repro.models.resnet import PadShortcut

# Table 6, as printed: (depth, params in millions with the paper's number of decimals).
TABLE6_PARAMS = [(20, "0.27"), (32, "0.46"), (44, "0.66"), (56, "0.85"), (110, "1.7"), (1202, "19.4")]
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
TABLE1_MULT_ADDS = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}


def _millions(params: int, printed: str) -> str:
    decimals = len(printed.split(".")[1])
    return f"{params / 1e6:.{decimals}f}"


@pytest.mark.parametrize(("depth", "printed"), TABLE6_PARAMS)
def test_cifar_params_match_table6_and_plain_equals_option_a(depth, printed):
    residual = count_params(build(f"resnet{depth}"))
    assert _millions(residual, printed) == printed
    if depth != 1202:  # no plain-1202 in the paper, and one build of that size is enough
        assert count_params(build(f"plain{depth}")) == residual


def test_option_a_adds_no_parameters_and_pads_with_zeros():
    assert count_params(build("resnet34-a")) == count_params(build("plain34"))
    assert count_params(build("resnet20-b")) > count_params(build("resnet20"))
    pads = [m for m in build("resnet20").modules() if isinstance(m, PadShortcut)]
    assert len(pads) == 2 and all(count_params(m) == 0 for m in pads)
    x = torch.randn(2, 16, 8, 8)
    out = pads[0](x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2]) and not out[:, 16:].any()
    # Bottlenecks widen without striding in conv2_1: padding alone, still no parameters.
    assert build("resnet50-a")(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_resnet20_forward_backward():
    model = build("resnet20")
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_plain_blocks_have_no_shortcut_and_residual_blocks_do():
    assert all(b.shortcut is None for b in build("plain20").modules() if isinstance(b, Block))
    assert all(b.shortcut is not None for b in build("resnet20").modules() if isinstance(b, Block))


def test_init_is_he_normal_fan_out_and_unit_bn():
    model = build("resnet56")
    conv = model.layer3[4].convs[1]  # 64 -> 64, 3x3: fan_out 576, std sqrt(2/576)
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any() for bn in bns)


def test_listed_names_are_canonical_and_aliases_resolve():
    for name in names():
        assert spec(name).name == name
    assert spec("cifar-resnet20").name == "resnet20"
    assert spec("resnet20-a").name == "resnet20"
    assert spec("resnet34-b").name == "resnet34"
    assert spec("resnet26").blocks_per_stage == (4, 4, 4)
    assert spec("resnet50").dataset == "imagenet" and spec("resnet50").block == "bottleneck"
    cifar50 = spec("cifar-resnet50")
    assert (cifar50.name, cifar50.dataset, cifar50.block) == ("cifar-resnet50", "cifar10", "basic")
    assert spec("preact-resnet110").block == "basic" and spec("preact-resnet164").block == "bottleneck"
    assert spec("plain20").shortcut is None and spec("resnet34-c").shortcut == "C"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet21", "CIFAR depths are 6n+2 (20, 32, 44, 56, 110, 1202, ...)"),
        ("vgg16", "ImageNet: resnet18, resnet34, resnet50, resnet101, resnet152"),
        ("cifar-resnet18", "cifar-resnet50"),
        ("preact-resnet120", "9n+2 above 110"),
        ("resnet20-d", "[-a|-b|-c]"),
        ("plain20-b", "plain nets have no shortcuts"),
        ("", "unknown model ''"),
    ],
)
def test_bad_names_say_what_is_valid(name, expected):
    with pytest.raises(ValueError, match="unknown model") as error:
        spec(name)
    assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"stride": 2}, "options are stride_placement ('v1' | 'v1.5'), zero_init_residual (False | True)"),
        ({"stride_placement": "v2"}, "stride_placement must be one of 'v1' | 'v1.5', got 'v2'"),
        ({"zero_init_residual": 1}, "zero_init_residual must be one of False | True, got 1"),
        ({"num_classes": 0}, "num_classes must be a positive int"),
    ],
)
def test_bad_options_say_what_is_valid(options, expected):
    with pytest.raises(ValueError) as error:
        build("resnet20", **options)
    assert expected in str(error.value)


def test_options_apply():
    assert build("resnet20", num_classes=100).head.fc.out_features == 100
    assert spec("resnet50", stride_placement="v1.5").stride_placement == "v1.5"
    with pytest.raises(ValueError, match="plain nets have none"):
        spec("plain20", zero_init_residual=True)


def test_shortcut_options_b_and_c():
    b, c = build("resnet34"), build("resnet34-c")
    def projections(model):
        return sum(isinstance(m.shortcut, nn.Sequential) for m in model.modules() if isinstance(m, Block))

    assert projections(b) == 3  # conv3_1, conv4_1, conv5_1: where dimensions increase
    assert projections(c) == 16  # every block


def test_stride_placement_moves_the_stride_within_the_bottleneck():
    v1, v15 = build("resnet50").layer2[0], build("resnet50", stride_placement="v1.5").layer2[0]
    assert [conv.stride for conv in v1.convs] == [(2, 2), (1, 1), (1, 1)]
    assert [conv.stride for conv in v15.convs] == [(1, 1), (2, 2), (1, 1)]


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_imagenet_params_match_torchvision_and_flops_match_table1(depth):
    row = describe(f"resnet{depth}")
    assert row["params"] == TORCHVISION_PARAMS[depth]
    assert row["flops"] == pytest.approx(TABLE1_MULT_ADDS[depth], rel=0.03)
    assert describe(f"resnet{depth}", stride_placement="v1.5")["params"] == TORCHVISION_PARAMS[depth]


def test_v15_resnet50_costs_about_4_1e9_multiply_adds():
    assert describe("resnet50", stride_placement="v1.5")["flops"] == pytest.approx(4.1e9, rel=0.01)


def test_count_flops_is_multiply_adds_of_convs_and_fc():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    assert count_flops(model, 4) == 4 * 4 * 8 * 3 * 9 + 8 * 4 * 4 * 10


def test_preact_resnet164_has_he_2016_size():
    assert _millions(count_params(build("preact-resnet164")), "1.7") == "1.7"


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_state_dict_gives_the_same_logits(depth):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, f"resnet{depth}")().eval()
    model = build(f"resnet{depth}", stride_placement="v1.5").eval()
    model.load_state_dict(from_torchvision(reference.state_dict()))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=1e-4, atol=1e-5)


def test_torchvision_key_map():
    assert torchvision_key("layer3.22.bn2.running_var") == "layer3.22.bns.1.running_var"
    assert torchvision_key("layer2.0.downsample.0.weight") == "layer2.0.shortcut.0.weight"
    assert torchvision_key("fc.bias") == "head.fc.bias"
    with pytest.raises(KeyError, match="avgpool.weight"):
        torchvision_key("avgpool.weight")


@pytest.mark.parametrize("name", ["resnet20", "preact-resnet20"])
def test_zero_init_residual_makes_same_shape_blocks_identity(name):
    model = build(name, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(getattr(m, "shortcut", None), nn.Identity)]
    assert blocks
    with torch.no_grad():
        for block in blocks:
            # Original blocks receive the previous block's ReLU output, hence non-negative inputs.
            x = torch.randn(2, block.convs[0].in_channels, 8, 8).relu()
            torch.testing.assert_close(block(x), x)


def test_layer_responses_hook_every_3x3_bn_and_restore_the_mode():
    model = build("resnet20").train()
    images = torch.randn(4, 3, 32, 32)
    responses = layer_responses(model, images)
    assert len(responses) == 18 and model.training
    assert list(responses)[:2] == ["layer1.0.bns.0", "layer1.0.bns.1"]
    assert responses["layer3.2.bns.1"].shape == (4, 64, 8, 8)
    model.eval()
    with torch.no_grad():
        first = model.layer1[0]
        expected = first.bns[0](first.convs[0](model.stem(images)))
    torch.testing.assert_close(responses["layer1.0.bns.0"], expected)
    preact = layer_responses(build("preact-resnet20"), images[:1])
    assert len(preact) == 18 and all(".convs." in name for name in preact)
    assert len(layer_responses(build("resnet50"), torch.randn(1, 3, 64, 64))) == 16  # one 3x3 per bottleneck


def test_torch_export_resnet20():
    model = build("resnet20").eval()
    images = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (images,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(images), model(images))


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    models_cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


def test_models_command_prints_table_and_json(capsys):
    assert _run_cli(["models", "resnet20", "cifar-resnet50"]) == 0
    table = capsys.readouterr().out
    assert "resnet20" in table and "269,722" in table and "40.6M" in table
    assert _run_cli(["models", "--json", "resnet20", "plain20"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["params"]) for r in rows] == [("resnet20", 269_722), ("plain20", 269_722)]
    assert rows[0]["flops"] == rows[1]["flops"] > 0
