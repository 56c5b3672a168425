"""The paper's numbers, as data, with the table or figure each comes from (He et al., 2015).

Only what the paper states (its tables and figures); the report prints these beside the measured
numbers.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class CifarResult:
    depth: int
    params_millions: float  # Table 6
    resnet_test_error: float | None  # Table 6, percent
    plain_test_error: float | None  # Figure 6, read off the plot (approximate), percent
    note: str = ""
    # Table 6 gives ResNet-110 as best of 5 runs with the mean +/- std of the 5 beside it.
    resnet_mean_error: float | None = None
    resnet_std_error: float | None = None
    # Figure 6: plain-110 does not train ("above 60% error"); plain_test_error is then a lower bound.
    plain_fails: bool = False


# Table 6 (ResNet test error) and Figure 6 (plain nets: error rises with depth).
CIFAR10 = {
    20: CifarResult(20, 0.27, 8.75, 9.0, "plain-20 about 9% (Figure 6)"),
    32: CifarResult(32, 0.46, 7.51, None),
    44: CifarResult(44, 0.66, 7.17, None),
    56: CifarResult(56, 0.85, 6.97, 13.0, "plain-56 about 13% (Figure 6)"),
    110: CifarResult(110, 1.7, 6.43, 60.0, "best of 5 runs; mean 6.61 +/- 0.16. plain-110 above 60% (Figure 6)",
                     resnet_mean_error=6.61, resnet_std_error=0.16, plain_fails=True),
    1202: CifarResult(1202, 19.4, 7.93, None, "training error below 0.1%, overfits"),
}

# Tables 2-4: ImageNet 10-crop validation error, percent (top-1, top-5; None where not given).
IMAGENET_10CROP = {
    "plain18": (27.94, None), "resnet18-a": (27.88, None),
    "plain34": (28.54, 10.02), "resnet34-a": (25.03, 7.76), "resnet34": (24.52, 7.46),
    "resnet34-c": (24.19, 7.40), "resnet50": (22.85, 6.71), "resnet101": (21.75, 6.05),
    "resnet152": (21.43, 5.71),
}

# Where each IMAGENET_10CROP entry is printed: Table 2 (plain vs residual, option A, top-1 only),
# Table 3 (shortcut options A/B/C and the bottleneck nets, top-1 and top-5).
IMAGENET_10CROP_SOURCE = {
    "plain18": "Table 2", "resnet18-a": "Table 2",
    "plain34": "Tables 2, 3", "resnet34-a": "Tables 2, 3", "resnet34": "Table 3", "resnet34-c": "Table 3",
    "resnet50": "Table 3", "resnet101": "Table 3", "resnet152": "Table 3",
}
