"""The zoo against the papers: Table 6 and Table 1 counts, torchvision parity, names, options, and
every kind of net under the ways it is run (CPU training, bf16 autocast, channels_last, torch.export,
torch.compile)."""

import copy
import json
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_repro import cli
from resnet_repro.models import (
    Block,
    PadShortcut,
    PreActBlock,
    ResNet,
    build,
    count_flops,
    count_params,
    counterpart,
    describe,
    names,
    response_modules,
    spec,
)

# Table 6, as printed: (depth, params in millions with the paper's number of decimals).
TABLE6_PARAMS = [(20, "0.27"), (32, "0.46"), (44, "0.66"), (56, "0.85"), (110, "1.7"), (1202, "19.4")]
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
TABLE1_MULT_ADDS = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}
# ImageNet's ResNet-18 with a 3x3/64 stem and a 10-way fc, as PyTorch's CIFAR-10 code writes it: torchvision's
# 11,689,512 less the 7x7 conv1 (9,408) and the 1000-way fc (513,000), plus a 3x3 conv1 (1,728) and a
# 10-way fc (5,130). Multiply-adds at 32x32: conv1 32*32*64*27; layer1 four 64->64 3x3 convs at 32x32; each
# later stage a first 3x3 conv from half the channels, three 3x3 convs and a 1x1 projection, all at 128
# (16x16), 256 (8x8) or 512 (4x4) channels, which cost the same at each stage; and the fc.
RESNET18_CIFAR_PARAMS = 11_689_512 - 9_408 - 513_000 + 1_728 + 5_130
STAGE_MULT_ADDS = 16 * 16 * 128 * (64 * 9 + 3 * 128 * 9 + 64)
RESNET18_CIFAR_MULT_ADDS = 32 * 32 * 64 * 27 + 4 * 32 * 32 * 64 * 64 * 9 + 3 * STAGE_MULT_ADDS + 512 * 10
# The plain twin: the same layers without the three projections (1x1 conv and BN) and their multiply-adds.
PROJECTION_PARAMS = sum(c * 2 * c + 2 * 2 * c for c in (64, 128, 256))
PROJECTION_MULT_ADDS = 3 * 16 * 16 * 128 * 64

# One listed net of each kind the zoo builds, with the options that make the kind.
KINDS = {
    "cifar-plain": ("plain20", {}),
    "cifar-residual-a": ("resnet20", {}),
    "cifar-residual-b": ("resnet20-b", {}),
    "cifar-preact-basic": ("preact-resnet110", {}),
    "cifar-preact-bottleneck": ("preact-resnet164", {}),
    "imagenet-plain": ("plain18", {}),
    "imagenet-basic-a": ("resnet18-a", {}),
    "imagenet-basic-b": ("resnet18", {}),
    "imagenet-bottleneck-v1": ("resnet50", {}),
    "imagenet-bottleneck-v1.5": ("resnet50", {"stride_placement": "v1.5"}),
    "imagenet-option-c": ("resnet34-c", {}),
    "imagenet-preact": ("preact-resnet50", {}),
    "cifar-stem-imagenet-basic": ("resnet18-cifar", {}),
    "cifar-stem-imagenet-plain": ("plain18-cifar", {}),
}
# ImageNet nets are fully convolutional (adaptive pooling): 64x64 exercises every layer for 1/12 of
# the cost of 224x224 where a test is about mechanics, not FLOPs.
SMALL_INPUT = {"cifar10": 32, "imagenet": 64}


def _small(kind: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The net of `kind` cut to two blocks a stage (one that changes the shape, one that keeps it),
    with a fixed batch of two images and their labels."""
    name, options = KINDS[kind]
    s = spec(name, **options)
    s = replace(s, blocks_per_stage=(2,) * len(s.blocks_per_stage))
    torch.manual_seed(0)
    model = ResNet(s)
    size = SMALL_INPUT[s.dataset]
    return model, torch.randn(2, 3, size, size), torch.randint(0, s.num_classes, (2,))


def _loss(model: Callable[..., torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(images), labels)


def _block(model: nn.Module, name: str) -> Block:
    """The block `name` (e.g. "layer1.0") of `model`, typed as one."""
    block = model.get_submodule(name)
    assert isinstance(block, Block), f"{name} is a {type(block).__name__}"
    return block


def _eval_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(images)


def _assert_finite_fp32_grads(model: nn.Module) -> None:
    # Every parameter takes part (DistributedDataParallel fails on unused ones); under autocast
    # too, weights and their gradients stay fp32.
    for key, parameter in model.named_parameters():
        grad = parameter.grad
        assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all(), key


def _millions(params: int, printed: str) -> str:
    decimals = len(printed.split(".")[1])
    return f"{params / 1e6:.{decimals}f}"


# Counts against the papers and torchvision


@pytest.mark.parametrize(("depth", "printed"), TABLE6_PARAMS)
def test_cifar_params_match_table6_and_plain_equals_option_a(depth, printed):
    residual = describe(f"resnet{depth}")["params"]
    assert _millions(residual, printed) == printed
    assert describe(f"plain{depth}")["params"] == residual


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
    assert describe("resnet50-a")["params"] == describe("plain50")["params"]


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_imagenet_params_match_torchvision_and_flops_match_table1(depth):
    row = describe(f"resnet{depth}")
    assert row["params"] == TORCHVISION_PARAMS[depth]
    with torch.device("meta"):
        assert count_params(getattr(torchvision.models, f"resnet{depth}")()) == TORCHVISION_PARAMS[depth]
    assert row["flops"] == pytest.approx(TABLE1_MULT_ADDS[depth], rel=0.03)
    assert describe(f"resnet{depth}", stride_placement="v1.5")["params"] == TORCHVISION_PARAMS[depth]


def test_resnet18_cifar_has_the_counts_of_imagenets_resnet18_with_a_cifar_stem():
    assert RESNET18_CIFAR_PARAMS == 11_173_962  # the count PyTorch's CIFAR-10 code prints for it
    row = describe("resnet18-cifar")
    assert (row["params"], row["flops"]) == (RESNET18_CIFAR_PARAMS, RESNET18_CIFAR_MULT_ADDS)
    assert count_params(build("resnet18-cifar")) == RESNET18_CIFAR_PARAMS
    plain = describe("plain18-cifar")
    assert plain["params"] == RESNET18_CIFAR_PARAMS - PROJECTION_PARAMS
    assert plain["flops"] == RESNET18_CIFAR_MULT_ADDS - PROJECTION_MULT_ADDS


def test_v15_resnet50_costs_about_4_1e9_multiply_adds():
    assert describe("resnet50", stride_placement="v1.5")["flops"] == pytest.approx(4.1e9, rel=0.01)


def test_preact_resnet164_has_he_2016_size():
    assert _millions(describe("preact-resnet164")["params"], "1.7") == "1.7"


def test_count_flops_is_multiply_adds_of_convs_and_fc():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    assert count_flops(model, 4) == 4 * 4 * 8 * 3 * 9 + 8 * 4 * 4 * 10


@pytest.mark.parametrize("kind", KINDS)
def test_describe_counts_equal_the_whole_net(kind):
    # describe measures a net cut to two blocks a stage and adds the cut blocks; the whole net must agree.
    name, options = KINDS[kind]
    s = spec(name, **options)
    with torch.device("meta"):
        model = ResNet(s).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, s.input_size, s.input_size))
    row = describe(name, **options)
    assert row["flops"] == count_flops(model, s.input_size) == counter.get_total_flops() // 2 > 0
    assert row["params"] == count_params(model)


# torchvision parity


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_torchvision_state_dicts_load_as_they_are(depth):
    # On the meta device (no memory, no init): strict loading still checks every key and shape, both ways.
    with torch.device("meta"):
        reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        model = build(f"resnet{depth}", stride_placement="v1.5")
    model.load_state_dict(reference.state_dict())
    assert list(model.state_dict()) == list(reference.state_dict())  # in the same order, too
    assert [name for name, _ in model.named_children()] == [name for name, _ in reference.named_children()]


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_state_dict_gives_the_same_logits(depth):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    # Fresh BNs are the identity in eval mode, which would hide two BNs swapped in a block.
    with torch.no_grad():
        for bn in (m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)):
            assert bn.running_mean is not None and bn.running_var is not None  # tracked, as by default
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    model = build(f"resnet{depth}", stride_placement="v1.5").eval()
    model.load_state_dict(reference.state_dict())  # strict: every key, both ways
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(images)
        atol = 1e-5 * expected.abs().max().item()
        torch.testing.assert_close(model(images), expected, rtol=1e-4, atol=atol)


def _torchvision_resnet18_cifar() -> nn.Module:
    """ResNet-18 for CIFAR-10 as PyTorch users write it: torchvision's, with a 3x3/64 stride-1 conv1 and no max-pool."""
    reference = torchvision.models.resnet18(num_classes=10)
    reference.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    reference.maxpool = nn.Identity()
    return reference


def test_resnet18_cifar_is_torchvisions_resnet18_with_a_cifar_stem():
    torch.manual_seed(0)
    reference = _torchvision_resnet18_cifar().eval()
    with torch.no_grad():  # BNs that are not the identity, as above
        for bn in (m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)):
            assert bn.running_mean is not None and bn.running_var is not None  # tracked, as by default
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    model = build("resnet18-cifar").eval()
    model.load_state_dict(reference.state_dict())  # strict: every key, both ways
    assert list(model.state_dict()) == list(reference.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(images)
        torch.testing.assert_close(model(images), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    assert count_flops(model, 32) == count_flops(reference, 32)


def test_resnet18_cifar_keeps_32x32_images_whole_until_its_stages_halve_them():
    model, plain = build("resnet18-cifar"), build("plain18-cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.maxpool is None
    sizes = []
    for layer in model.layers:
        layer.register_forward_hook(lambda _module, _inputs, output: sizes.append(tuple(output.shape[1:])))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sizes == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    # Projections (option B) where the shape changes, nothing elsewhere; the plain twin has the same blocks.
    downsamples = [b.downsample for b in model.modules() if isinstance(b, Block)]
    assert [d is not None for d in downsamples] == [False, False, True, False, True, False, True, False]
    assert all(isinstance(d, nn.Sequential) and isinstance(d[0], nn.Conv2d) and d[0].kernel_size == (1, 1)
               for d in downsamples if d is not None)
    assert not any(b.residual for b in plain.modules() if isinstance(b, Block))
    assert spec("plain18-cifar").blocks_per_stage == spec("resnet18-cifar").blocks_per_stage == (2, 2, 2, 2)
    # ImageNet's stem would leave a 32x32 image 1x1 in the last stage: the reason for the -cifar nets.
    imagenet_sizes = []
    imagenet = build("resnet18", num_classes=10)
    imagenet.get_submodule("layer4").register_forward_hook(
        lambda _m, _i, output: imagenet_sizes.append(tuple(output.shape[2:])))
    imagenet(torch.randn(2, 3, 32, 32))
    assert imagenet_sizes == [(1, 1)]


# Structure and initialisation


def test_cifar_nets_have_a_3x3_stem_three_stages_and_no_maxpool():
    model = build("resnet20")
    assert [name for name, _ in model.named_children()] == [
        "conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"
    ]  # fmt: skip
    assert model.conv1.kernel_size == (3, 3) and model.maxpool is None and model.layers == [
        model.layer1, model.layer2, model.layer3
    ]  # fmt: skip
    # Pre-activation: the first block normalises conv1's output, a BN-ReLU ends the last stage.
    preact = build("preact-resnet110")
    assert preact.bn1 is None and preact.final_bn is not None and preact.final_bn.num_features == 64


def test_plain_nets_are_residual_nets_without_the_additions():
    plain, residual = build("plain20").eval(), build("resnet20").eval()
    assert not any(b.residual for b in plain.modules() if isinstance(b, Block))
    assert all(b.residual for b in residual.modules() if isinstance(b, Block))
    plain.load_state_dict(residual.state_dict())  # option A: the very same parameters
    x = torch.randn(2, 16, 8, 8)
    r = _block(residual, "layer1.0")
    with torch.no_grad():
        branch = r.bn2(r.conv2(F.relu(r.bn1(r.conv1(x)))))
        torch.testing.assert_close(r(x), F.relu(branch + x))
        torch.testing.assert_close(plain.get_submodule("layer1.0")(x), F.relu(branch))


def test_shortcut_options_b_and_c():
    b, c = build("resnet34"), build("resnet34-c")

    def projections(model):
        return sum(isinstance(m.downsample, nn.Sequential) for m in model.modules() if isinstance(m, Block))

    assert projections(b) == 3  # conv3_1, conv4_1, conv5_1: where dimensions increase
    assert projections(c) == 16  # every block


def test_stride_placement_moves_the_stride_within_the_bottleneck():
    v1, v15 = _block(build("resnet50"), "layer2.0"), _block(build("resnet50", stride_placement="v1.5"), "layer2.0")
    assert v1.conv3 is not None and v15.conv3 is not None  # bottlenecks
    assert [v1.conv1.stride, v1.conv2.stride, v1.conv3.stride] == [(2, 2), (1, 1), (1, 1)]
    assert [v15.conv1.stride, v15.conv2.stride, v15.conv3.stride] == [(1, 1), (2, 2), (1, 1)]


def test_init_is_he_normal_fan_out_and_unit_bn():
    model = build("resnet56")
    conv = _block(model, "layer3.4").conv2  # 64 -> 64, 3x3: fan_out 576, std sqrt(2/576)
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any() for bn in bns)


def test_a_net_built_on_meta_materialises_with_to_empty_and_reset_parameters():
    with torch.device("meta"):
        model = build("resnet20", zero_init_residual=True)
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.reset_parameters()
    fresh = build("resnet20", zero_init_residual=True)
    torch.manual_seed(0)
    fresh.reset_parameters()
    # Running statistics too: to_empty leaves garbage in every buffer.
    for (key, value), expected in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(value, expected), key


def _zero_padded_subsample(x: torch.Tensor, channels: int, stride: int) -> torch.Tensor:
    sub = x[:, :, ::stride, ::stride]
    return torch.cat([sub, sub.new_zeros(sub.shape[0], channels - sub.shape[1], *sub.shape[2:])], 1)


@pytest.mark.parametrize("name", ["resnet20", "resnet50-a", "preact-resnet20-a"])
def test_zero_init_residual_makes_blocks_identity_or_zero_padded_subsample(name):
    model = build(name, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, (Block, PreActBlock))]
    assert any(isinstance(b.downsample, PadShortcut) for b in blocks)
    torch.manual_seed(0)
    with torch.no_grad():
        for block in blocks:
            # Original blocks receive the previous block's ReLU output, hence non-negative inputs; a
            # pre-activation block's fresh BN-ReLU leaves those as they are but for BN's epsilon.
            last = block.conv2 if block.conv3 is None else block.conv3
            x = torch.randn(2, block.conv1.in_channels, 8, 8).relu()
            stride = block.conv1.stride[0] * block.conv2.stride[0]
            expected = _zero_padded_subsample(x, last.out_channels, stride)
            torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


# Names and options


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
    # An ImageNet name with -cifar: Table 1's stages, CIFAR-10's stem, classes and input size, option B.
    cifar18 = spec("resnet18-cifar")
    assert (cifar18.dataset, cifar18.num_classes, cifar18.input_size, cifar18.shortcut) == ("cifar10", 10, 32, "B")
    assert (cifar18.widths, cifar18.block) == (spec("resnet18").widths, "basic")
    assert spec("resnet18-cifar", shortcut="A").name == "resnet18-a-cifar" == spec("resnet18-a-cifar").name
    assert spec("resnet50-cifar").block == "bottleneck" and spec("resnet50-cifar").name != spec("cifar-resnet50").name


def test_counterpart_is_the_same_net_for_the_other_image_size():
    assert counterpart("resnet18") == "resnet18-cifar" and counterpart("resnet18-cifar") == "resnet18"
    assert counterpart("plain34") == "plain34-cifar" and counterpart("resnet34-c") == "resnet34-c-cifar"
    assert counterpart("resnet20") is None and counterpart("cifar-resnet50") is None
    for name in ("resnet18", "plain34", "resnet50", "preact-resnet152"):
        other = counterpart(name)
        assert other is not None
        imagenet, cifar = spec(name), spec(other)
        assert (imagenet.blocks_per_stage, imagenet.widths, imagenet.block, imagenet.shortcut) == \
            (cifar.blocks_per_stage, cifar.widths, cifar.block, cifar.shortcut)
        assert (imagenet.dataset, cifar.dataset) == ("imagenet", "cifar10")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet21", "CIFAR depths are 6n+2 (20, 32, 44, 56, 110, 1202, ...)"),
        ("vgg16", "ImageNet: resnet18, resnet34, resnet50, resnet101, resnet152"),
        ("cifar-resnet18", "ImageNet's 18 layers with the CIFAR stem are resnet18-cifar"),
        ("resnet20-cifar", "-cifar puts the CIFAR stem on an ImageNet net, whose depths are 18, 34, 50, 101, 152"),
        ("cifar-resnet18-cifar", "a cifar- prefix names a net of Section 4.2, a -cifar suffix an ImageNet net"),
        ("plain18-b-cifar", "plain nets have no shortcuts"),
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
    ("name", "options", "expected"),
    [
        ("resnet20", {"stride": 2}, ("options are shortcut ('A' | 'B' | 'C'), stride_placement ('v1' | 'v1.5'), "
                                     "zero_init_residual (False | True), num_classes")),
        ("resnet20", {"shortcut": "d"}, "shortcut must be one of 'A' | 'B' | 'C', got 'd'"),
        ("resnet20", {"shortcut": None}, "shortcut must be one of 'A' | 'B' | 'C', got None"),
        ("resnet20-b", {"shortcut": "C"}, "the name says shortcut 'B', the option 'C'"),
        ("plain20", {"shortcut": "A"}, "plain nets have no shortcuts"),
        ("resnet20", {"stride_placement": "v2"}, "stride_placement must be one of 'v1' | 'v1.5', got 'v2'"),
        ("resnet20", {"zero_init_residual": 1}, "zero_init_residual must be one of False | True, got 1"),
        ("plain20", {"zero_init_residual": True}, "plain nets have none"),
        ("resnet20", {"num_classes": 0}, "num_classes must be a positive int"),
    ],
)  # fmt: skip
def test_bad_options_say_what_is_valid(name, options, expected):
    with pytest.raises(ValueError) as error:
        build(name, **options)
    assert expected in str(error.value)


def test_options_apply():
    assert build("resnet20", num_classes=100).fc.out_features == 100
    assert spec("resnet50", stride_placement="v1.5").stride_placement == "v1.5"
    assert spec("resnet20", shortcut="B") == spec("resnet20-b") == spec("resnet20-b", shortcut="b")
    assert spec("resnet20", shortcut="B").name == "resnet20-b"
    assert spec("resnet34", shortcut="A").name == "resnet34-a"
    assert count_params(build("resnet20", shortcut="B")) == count_params(build("resnet20-b"))


# Layer responses (Figure 7)


def test_response_modules_are_every_3x3_layer_in_forward_order():
    model = build("resnet20")
    modules = response_modules(model)
    assert len(modules) == 18  # 3 stages x 3 blocks x 2 layers
    assert list(modules)[:3] == ["layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1"]
    assert modules["layer3.2.bn2"] is model.get_submodule("layer3.2.bn2")
    # Pre-activation blocks: BN precedes the conv, so the 3x3 conv's output is the response.
    preact = response_modules(build("preact-resnet20"))
    assert len(preact) == 18 and all(m.kernel_size == (3, 3) for m in preact.values())
    assert all(isinstance(m, nn.Conv2d) for m in preact.values())
    bottlenecks = response_modules(build("resnet50"))  # one 3x3 per bottleneck
    assert len(bottlenecks) == 16 and all(name.endswith(".bn2") for name in bottlenecks)


# Every kind, the ways it is run


@pytest.mark.slow  # 30 nets, two with over a thousand layers: the kinds above run in the default suite
def test_every_listed_name_builds_and_runs_on_cpu():
    for name in names():
        s = spec(name)
        # Train mode, as a fresh net is used: BN normalises with the batch's statistics. In eval mode
        # its fresh running statistics (0, 1) leave 600 residual additions unnormalised, and
        # ResNet-1202's activations overflow.
        model = build(name).train()
        # Half the small input (every stage still sees at least 2x2 positions): this is about
        # building and running all 30 nets, two with over a thousand layers.
        size = SMALL_INPUT[s.dataset] // 2
        with torch.no_grad():
            logits = model(torch.randn(2, 3, size, size))
        assert logits.shape == (2, s.num_classes) and torch.isfinite(logits).all(), name


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_on_cpu(kind):
    model, images, labels = _small(kind)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = _loss(model, images, labels)
    before.backward()
    _assert_finite_fp32_grads(model)
    optimizer.step()
    with torch.no_grad():
        after = _loss(model, images, labels)
    assert after < before.detach()


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_runs_under_bf16_autocast(kind):
    model, images, labels = _small(kind)
    reference = _eval_logits(model, images)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
    assert logits.dtype == torch.bfloat16
    scale = reference.abs().max().item()
    torch.testing.assert_close(logits.float(), reference, rtol=0.05, atol=0.05 * scale)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = _loss(model, images, labels)
    loss.backward()
    _assert_finite_fp32_grads(model)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_keeps_channels_last(kind):
    model, images, labels = _small(kind)
    reference = _eval_logits(model, images)
    model = model.to(memory_format=torch.channels_last)
    images = images.to(memory_format=torch.channels_last)
    formats = {}

    def record(name):
        def hook(_module, _inputs, output):
            if output.dim() == 4 and output.shape[2] * output.shape[3] > 1:
                formats[name] = output.is_contiguous(memory_format=torch.channels_last)

        return hook

    for name, module in model.named_modules():
        module.register_forward_hook(record(name))
    with torch.no_grad():
        logits = model(images)
    # No layer falls back to NCHW (a copy per layer on a GPU); shortcuts (slicing, padding) included.
    # A 1x1 map is laid out alike in both formats, so says nothing.
    assert [name for name, ok in formats.items() if not ok] == []
    watched = (Block, PreActBlock, PadShortcut)
    assert all(name in formats for name, m in model.named_modules() if isinstance(m, watched))
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())
    model.train()
    _loss(model, images, labels).backward()
    _assert_finite_fp32_grads(model)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_exports_with_a_dynamic_batch(kind):
    model, images, _ = _small(kind)
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(model, (images,), dynamic_shapes=({0: batch},))
    other = torch.randn(3, *images.shape[1:])  # a batch size the export did not see
    torch.testing.assert_close(exported.module()(other), _eval_logits(model, other))


def _prefixed(prefix: str) -> Callable[[str], str]:
    """An assert_close message: its own, after `prefix`."""
    return lambda message: f"{prefix}: {message}"


def _compiled(model: nn.Module) -> Callable[..., torch.Tensor]:
    # A fresh dynamo: the nets share their forward code, and past its recompile limit (8) dynamo
    # would quietly run the next nets eager. fullgraph: each net traces as one graph, no breaks.
    torch._dynamo.reset()
    return torch.compile(model, fullgraph=True)


def test_torch_compile_matches_eager():
    # Inductor on CPU compiles C++: one net here, every kind in the slow sweep below.
    model, images, _ = _small("cifar-residual-a")
    expected = _eval_logits(model, images)
    with torch.no_grad():
        torch.testing.assert_close(_compiled(model)(images), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_under_torch_compile(kind):
    # fp32, as trained: the compiled net's loss is eager's, and an SGD step through it lowers it.
    model, images, labels = _small(kind)
    compiled = _compiled(model)
    before = _loss(compiled, images, labels)
    torch.testing.assert_close(before, _loss(copy.deepcopy(model), images, labels), rtol=1e-4, atol=1e-4)
    before.backward()
    _assert_finite_fp32_grads(model)
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    with torch.no_grad():
        assert _loss(compiled, images, labels) < before.detach()
    # fp64, for the gradients: in fp32, a fresh net's batch-2 BN statistics amplify the round-off
    # of inductor's other summation order to a few percent of a gradient, which would hide a wrong
    # one; in fp64 compiled and eager gradients agree to about 1e-13.
    model, images, labels = _small(kind)
    model, images = model.double(), images.double()
    eager = copy.deepcopy(model)
    _loss(_compiled(model), images, labels).backward()
    _loss(eager, images, labels).backward()
    for (key, parameter), reference in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(
            parameter.grad, reference.grad, rtol=1e-9, atol=1e-12, msg=_prefixed(key)
        )


# The command line


def cifar_counts_by_hand(n: int) -> tuple[int, int]:
    """Parameters and multiply-adds (convolutions and the classifier, one 32x32 image) of the CIFAR net
    with 6n+2 layers and option A shortcuts (Section 4.2), counted layer by layer apart from the package's
    code: a 3x3 stem, 2n 3x3 convolutions of 16, 32 and 64 channels at 32x32, 16x16 and 8x8 (the first of
    each later stage takes the previous width), a BN (2 parameters per channel) after every convolution,
    and a 64 -> 10 classifier."""
    params, flops = 3 * 16 * 9 + 2 * 16, 3 * 16 * 9 * 32 * 32
    for width, previous, side in ((16, 16, 32), (32, 16, 16), (64, 32, 8)):
        weights = previous * width * 9 + (2 * n - 1) * width * width * 9
        params += weights + 2 * n * 2 * width
        flops += weights * side * side
    return params + 64 * 10 + 10, flops + 64 * 10


def test_models_command_prints_table_and_json(capsys):
    params, flops = cifar_counts_by_hand(3)
    assert (params, flops) == (269_722, 40_551_040)  # what the table below prints; Table 6 says 0.27M
    assert cli.main(["models", "resnet20", "cifar-resnet50", "resnet18-cifar"]) == 0
    table = capsys.readouterr().out
    assert "resnet20" in table and "269,722" in table and "40.6M" in table
    assert "11,173,962" in table.splitlines()[3] and "555.4M" in table.splitlines()[3]
    assert cli.main(["models", "--json", "resnet20", "plain20"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["params"], r["flops"]) for r in rows] == [("resnet20", params, flops),
                                                                    ("plain20", params, flops)]


def test_models_json_lists_every_name_with_params_and_flops(capsys):
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == names()
    for row in rows:
        assert type(row["params"]) is int and type(row["flops"]) is int and row["flops"] > 0, row
    by_name = {row["name"]: row for row in rows}
    assert by_name["resnet152"]["params"] == TORCHVISION_PARAMS[152]
    assert (by_name["resnet1202"]["params"], by_name["resnet1202"]["flops"]) == cifar_counts_by_hand(200)


def test_models_command_rejects_a_bad_name(capsys):
    assert cli.main(["models", "resnet21"]) == 2
    assert "CIFAR depths are 6n+2" in capsys.readouterr().err
