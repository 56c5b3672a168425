"""Model names: what each one builds, as a `ModelSpec`, and `build` to get the `nn.Module`.

Grammar (a name says what it builds; `spec(name).name` is the canonical spelling):

    [cifar-]plain<d>[-cifar]                     no shortcuts
    [cifar-]resnet<d>[-a|-b|-c][-cifar]          He et al. 2015, shortcut option of Table 3
    [cifar-]preact-resnet<d>[-a|-b|-c][-cifar]   He et al. 2016, pre-activation blocks

- ImageNet (Table 1): d in 18, 34 (basic blocks), 50, 101, 152 (bottlenecks); option B by default.
- CIFAR-10 (Section 4.2): d = 6n+2 with basic blocks, option A by default. Pre-activation nets use
  basic blocks up to 110 and bottlenecks (d = 9n+2) above, like He et al. 2016's 110 / 164 / 1001,
  with option B (the authors' code projects where dimensions change).
- CIFAR-10, not in the papers: an ImageNet name with `-cifar` is that net with the CIFAR stem (a 3x3
  stride-1 conv, no max-pool) and a 10-way fc: `resnet18-cifar` is the "ResNet-18" most PyTorch
  CIFAR-10 code trains (11.2M parameters, Table 1's stages at 32x32), `plain18-cifar` its plain twin.
  Option B by default, as the ImageNet nets.
- An ImageNet depth always means the ImageNet net: 50 and 152 are also 6n+2, so the CIFAR nets of
  those depths are spelled `cifar-resnet50`, `cifar-plain152`. The `cifar-` prefix is accepted on
  every CIFAR name and kept in the canonical name only where it is needed.
- A suffix equal to the default is dropped from the canonical name: `resnet20-a` is `resnet20`.
- The suffix and the `shortcut` option say the same thing: `spec("resnet20", shortcut="B")` is `resnet20-b`.
- `counterpart(name)` is the same net for the other input size: `resnet18` <-> `resnet18-cifar`.
"""

import re
from dataclasses import replace
from typing import Any

from resnet_repro.models.resnet import BlockKind, Dataset, Family, ModelSpec, ResNet, ShortcutOption
from resnet_repro.models.weights import lookup

IMAGENET_STAGES: dict[int, tuple[BlockKind, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# What a dataset fixes about its nets (the stem follows the dataset, see resnet.ResNet).
DATASETS: dict[Dataset, dict[str, Any]] = {
    "imagenet": {"num_classes": 1000, "input_size": 224},
    "cifar10": {"num_classes": 10, "input_size": 32},
}
# Base channels of the stages: Table 1's four (the ImageNet nets and their -cifar versions), Section 4.2's three.
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)
CIFAR_STEM_SUFFIX = "-cifar"
# Beyond this depth the pre-activation CIFAR nets switch to bottlenecks (He et al. 2016).
PREACT_BASIC_MAX_DEPTH = 110

_PREFIX: dict[Family, str] = {"plain": "plain", "residual": "resnet", "preact": "preact-resnet"}
_FAMILY: dict[str, Family] = {prefix: family for family, prefix in _PREFIX.items()}
_NAME = re.compile(
    r"(?P<cifar>cifar-)?(?P<prefix>plain|resnet|preact-resnet)(?P<depth>[1-9][0-9]*)(?:-(?P<suffix>[abc]))?"
    r"(?P<cifar_stem>-cifar)?"
)

# The options of `spec` and `build` besides num_classes, each with its valid values; the name gives
# the defaults (the shortcut from its suffix or family, "v1", False).
OPTIONS = {
    "shortcut": ("A", "B", "C"),
    "stride_placement": ("v1", "v1.5"),
    "zero_init_residual": (False, True),
}

_LISTED = (
    # CIFAR-10: Figure 6 and Table 6, He et al. 2016's pre-activation nets
    "plain20", "plain32", "plain44", "plain56", "plain110",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202",
    "resnet20-b", "resnet56-b",
    "preact-resnet110", "preact-resnet164", "preact-resnet1001",
    # ImageNet: Tables 1-3
    "plain18", "plain34",
    "resnet18-a", "resnet34-a", "resnet18", "resnet34", "resnet34-c",
    "resnet50", "resnet101", "resnet152",
    "preact-resnet50", "preact-resnet152",
    # CIFAR-10, not in the papers: ImageNet's ResNet-18 with the CIFAR stem, as PyTorch users train it
    "plain18-cifar", "resnet18-cifar",
)  # fmt: skip

_FORMS = (
    "CIFAR depths are 6n+2 (20, 32, 44, 56, 110, 1202, ...), pre-activation 9n+2 above 110 (164, 1001); "
    "ImageNet: resnet18, resnet34, resnet50, resnet101, resnet152, plain18, plain34, preact-resnet18, ...; "
    "forms: [cifar-]plain<depth>, [cifar-]resnet<depth>[-a|-b|-c], [cifar-]preact-resnet<depth>[-a|-b|-c]; "
    "CIFAR nets at ImageNet depths need the prefix: cifar-resnet50; "
    "an ImageNet net with the CIFAR stem takes the suffix: resnet18-cifar"
)


def names() -> list[str]:
    """The canonical names of the nets in the papers, and of the ResNet-18 for CIFAR-10 most PyTorch
    code trains (`resnet18-cifar`) with its plain twin. `spec` accepts many more (any valid depth)."""
    return list(_LISTED)


def spec(name: str, **options: Any) -> ModelSpec:
    """What `name` builds; `options` (shortcut, stride_placement, zero_init_residual, num_classes) are
    checked and applied. Raises ValueError, one line naming the valid forms or values, for anything else."""
    match = _NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"unknown model {name!r}: {_FORMS}")
    family: Family = _FAMILY[match["prefix"]]
    depth = int(match["depth"])
    suffix = match["suffix"]
    if family == "plain" and suffix:
        raise ValueError(f"unknown model {name!r}: plain nets have no shortcuts, so no -{suffix} suffix")
    if suffix:
        # The suffix is the shortcut option spelled in the name; the two may not disagree.
        option = options.get("shortcut", suffix)
        if not isinstance(option, str) or option.upper() != suffix.upper():
            says = f"the name says shortcut {suffix.upper()!r}, the option {option!r}"
            raise ValueError(f"model {name!r}: {says}")
        options = {**options, "shortcut": suffix}
    imagenet_stages = depth in IMAGENET_STAGES and not match["cifar"]
    if match["cifar_stem"] and not imagenet_stages:
        if match["cifar"]:
            says = "a cifar- prefix names a net of Section 4.2, a -cifar suffix an ImageNet net with the CIFAR stem"
        else:
            depths = ", ".join(map(str, IMAGENET_STAGES))
            says = f"-cifar puts the CIFAR stem on an ImageNet net, whose depths are {depths}"
        raise ValueError(f"unknown model {name!r}: {says}; {_FORMS}")
    dataset: Dataset = "imagenet" if imagenet_stages and not match["cifar_stem"] else "cifar10"
    block, stages = IMAGENET_STAGES[depth] if imagenet_stages else _cifar_stages(name, family, depth)
    base = ModelSpec(
        name=name, family=family, dataset=dataset, depth=depth, block=block,
        shortcut=_default_shortcut(family, imagenet_stages), stride_placement="v1", blocks_per_stage=stages,
        widths=IMAGENET_WIDTHS if imagenet_stages else CIFAR_WIDTHS, **DATASETS[dataset],
    )  # fmt: skip
    s = _with_options(base, options)
    return replace(s, name=_canonical(s))


def build(name: str, num_classes: int | None = None, weights: str | None = None, **options: Any) -> ResNet:
    """The net `name` (see `spec`), with `num_classes` outputs if given: freshly initialised, or with
    the published `weights` ("cifar10" for `resnet20`; `models.weights.PUBLISHED` lists them all),
    their sha256 checked first (read from results/ in a checkout, else from the installed package)."""
    if num_classes is not None:
        options["num_classes"] = num_classes
    net = ResNet(spec(name, **options))
    if weights is not None:
        net.load_state_dict(lookup(net.spec.name, weights).get_state_dict())
    return net


def counterpart(name: str) -> str | None:
    """The same layers for the other input size: an ImageNet net's `-cifar` version (`resnet18` ->
    `resnet18-cifar`) and back; None for the CIFAR nets of Section 4.2, which have no ImageNet version."""
    s = spec(name)
    if not s.imagenet_stages:
        return None
    if s.dataset == "imagenet":
        return f"{s.name}{CIFAR_STEM_SUFFIX}"
    return s.name.removesuffix(CIFAR_STEM_SUFFIX)


def _cifar_stages(name: str, family: Family, depth: int) -> tuple[BlockKind, tuple[int, ...]]:
    block: BlockKind
    if family == "preact" and depth > PREACT_BASIC_MAX_DEPTH:
        block, layers_per_block = "bottleneck", 3
    else:
        block, layers_per_block = "basic", 2
    # Three stages of n blocks, plus the first conv and the fc.
    n, rest = divmod(depth - 2, 3 * layers_per_block)
    if rest or n < 1:
        hint = ""
        if depth in IMAGENET_STAGES:  # `cifar-resnet18` is a likely slip for ImageNet's ResNet-18 on CIFAR-10
            hint = f"ImageNet's {depth} layers with the CIFAR stem are {_PREFIX[family]}{depth}{CIFAR_STEM_SUFFIX}; "
        raise ValueError(f"unknown model {name!r}: {hint}{_FORMS}")
    return block, (n, n, n)


def _default_shortcut(family: Family, imagenet_stages: bool) -> ShortcutOption | None:
    if family == "plain":
        return None
    # Section 4.2 uses A on its CIFAR nets, the ImageNet nets of Table 1 use B (and so do their -cifar
    # versions, as the PyTorch code they come from); He et al. 2016's code projects wherever dimensions
    # change, on both.
    return "A" if family == "residual" and not imagenet_stages else "B"


def _canonical(s: ModelSpec) -> str:
    prefix = "cifar-" if s.dataset == "cifar10" and not s.imagenet_stages and s.depth in IMAGENET_STAGES else ""
    default = _default_shortcut(s.family, s.imagenet_stages)
    shortcut = "" if s.shortcut is None or s.shortcut == default else f"-{s.shortcut.lower()}"
    stem = CIFAR_STEM_SUFFIX if s.dataset == "cifar10" and s.imagenet_stages else ""
    return f"{prefix}{_PREFIX[s.family]}{s.depth}{shortcut}{stem}"


def _with_options(s: ModelSpec, options: dict[str, Any]) -> ModelSpec:
    valid = ", ".join(f"{key} ({' | '.join(map(repr, values))})" for key, values in OPTIONS.items())
    valid += ", num_classes (a positive int)"
    for key, value in options.items():
        # The name's suffix is lower case, so a shortcut is taken in either case: `a` is `A`.
        checked = value.upper() if key == "shortcut" and isinstance(value, str) else value
        if key == "num_classes":
            if type(value) is not int or value < 1:
                raise ValueError(f"model {s.name!r}: num_classes must be a positive int, got {value!r}")
        elif key not in OPTIONS:
            raise ValueError(f"model {s.name!r}: unknown option {key!r}; options are {valid}")
        # `type` check, because 1 == True and 0 == False would pass `in`.
        elif checked not in OPTIONS[key] or type(checked) is not type(OPTIONS[key][0]):
            choices = " | ".join(map(repr, OPTIONS[key]))
            raise ValueError(f"model {s.name!r}: {key} must be one of {choices}, got {value!r}")
    if "shortcut" in options:
        if s.family == "plain":
            raise ValueError(f"model {s.name!r}: plain nets have no shortcuts, so no shortcut option")
        options = {**options, "shortcut": options["shortcut"].upper()}
    if options.get("zero_init_residual") and s.family == "plain":
        raise ValueError(f"model {s.name!r}: zero_init_residual needs residual blocks; plain nets have none")
    return replace(s, **options)
