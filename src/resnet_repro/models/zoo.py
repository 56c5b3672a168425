"""Model names: what each one builds, as a `ModelSpec`, and `build` to get the `nn.Module`.

Grammar (a name says what it builds; `spec(name).name` is the canonical spelling):

    [cifar-]plain<d>                     no shortcuts
    [cifar-]resnet<d>[-a|-b|-c]          He et al. 2015, shortcut option of Table 3
    [cifar-]preact-resnet<d>[-a|-b|-c]   He et al. 2016, pre-activation blocks

- ImageNet (Table 1): d in 18, 34 (basic blocks), 50, 101, 152 (bottlenecks); option B by default.
- CIFAR-10 (Section 4.2): d = 6n+2 with basic blocks, option A by default. Pre-activation nets use
  basic blocks up to 110 and bottlenecks (d = 9n+2) above, like He et al. 2016's 110 / 164 / 1001,
  with option B (the authors' code projects where dimensions change).
- An ImageNet depth always means the ImageNet net: 50 and 152 are also 6n+2, so the CIFAR nets of
  those depths are spelled `cifar-resnet50`, `cifar-plain152`. The `cifar-` prefix is accepted on
  every CIFAR name and kept in the canonical name only where it is needed.
- A suffix equal to the default is dropped from the canonical name: `resnet20-a` is `resnet20`.
- The suffix and the `shortcut` option say the same thing: `spec("resnet20", shortcut="B")` is `resnet20-b`.
"""

import re
from dataclasses import replace
from typing import Any

from resnet_repro.models.resnet import Dataset, Family, ModelSpec, ResNet
from resnet_repro.models.weights import lookup

IMAGENET_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# What a dataset fixes about its nets: Table 1 for ImageNet, Section 4.2 for CIFAR-10.
DATASETS: dict[Dataset, dict[str, Any]] = {
    "imagenet": {"num_classes": 1000, "input_size": 224, "widths": (64, 128, 256, 512)},
    "cifar10": {"num_classes": 10, "input_size": 32, "widths": (16, 32, 64)},
}
# Beyond this depth the pre-activation CIFAR nets switch to bottlenecks (He et al. 2016).
PREACT_BASIC_MAX_DEPTH = 110

_PREFIX = {"plain": "plain", "residual": "resnet", "preact": "preact-resnet"}
_FAMILY = {prefix: family for family, prefix in _PREFIX.items()}
_NAME = re.compile(
    r"(?P<cifar>cifar-)?(?P<prefix>plain|resnet|preact-resnet)(?P<depth>[1-9][0-9]*)(?:-(?P<suffix>[abc]))?"
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
)  # fmt: skip

_FORMS = (
    "CIFAR depths are 6n+2 (20, 32, 44, 56, 110, 1202, ...), pre-activation 9n+2 above 110 (164, 1001); "
    "ImageNet: resnet18, resnet34, resnet50, resnet101, resnet152, plain18, plain34, preact-resnet18, ...; "
    "forms: [cifar-]plain<depth>, [cifar-]resnet<depth>[-a|-b|-c], [cifar-]preact-resnet<depth>[-a|-b|-c]; "
    "CIFAR nets at ImageNet depths need the prefix: cifar-resnet50"
)


def names() -> list[str]:
    """The canonical names of the nets in the papers. `spec` accepts many more (any valid depth)."""
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
    dataset: Dataset = "imagenet" if depth in IMAGENET_STAGES and not match["cifar"] else "cifar10"
    block, stages = IMAGENET_STAGES[depth] if dataset == "imagenet" else _cifar_stages(name, family, depth)
    base = ModelSpec(
        name=name, family=family, dataset=dataset, depth=depth, block=block,
        shortcut=_default_shortcut(family, dataset), stride_placement="v1",
        blocks_per_stage=stages, **DATASETS[dataset],
    )  # fmt: skip
    s = _with_options(base, options)
    return replace(s, name=_canonical(s))


def build(name: str, num_classes: int | None = None, weights: str | None = None, **options: Any) -> ResNet:
    """The net `name` (see `spec`), with `num_classes` outputs if given: freshly initialised, or with
    the published `weights` ("cifar10" for `resnet20`; `models.weights.PUBLISHED` lists them all),
    their sha256 checked first (downloaded into torch.hub's cache outside a checkout: `models.weights`)."""
    if num_classes is not None:
        options["num_classes"] = num_classes
    net = ResNet(spec(name, **options))
    if weights is not None:
        net.load_state_dict(lookup(net.spec.name, weights).get_state_dict())
    return net


def _cifar_stages(name: str, family: Family, depth: int) -> tuple[str, tuple[int, ...]]:
    if family == "preact" and depth > PREACT_BASIC_MAX_DEPTH:
        block, layers_per_block = "bottleneck", 3
    else:
        block, layers_per_block = "basic", 2
    # Three stages of n blocks, plus the first conv and the fc.
    n, rest = divmod(depth - 2, 3 * layers_per_block)
    if rest or n < 1:
        raise ValueError(f"unknown model {name!r}: {_FORMS}")
    return block, (n, n, n)


def _default_shortcut(family: Family, dataset: Dataset) -> str | None:
    if family == "plain":
        return None
    # Section 4.2 uses A on CIFAR, the ImageNet nets of Table 1 use B; He et al. 2016's code
    # projects wherever dimensions change, on both.
    return "A" if (family, dataset) == ("residual", "cifar10") else "B"


def _canonical(s: ModelSpec) -> str:
    prefix = "cifar-" if s.dataset == "cifar10" and s.depth in IMAGENET_STAGES else ""
    suffix = "" if s.shortcut == _default_shortcut(s.family, s.dataset) else f"-{s.shortcut.lower()}"
    return f"{prefix}{_PREFIX[s.family]}{s.depth}{suffix}"


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
