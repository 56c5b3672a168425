"""`resnet-repro models`: the nets with their parameter and multiply-add counts."""

import argparse
import json

from resnet_repro.models.audit import describe
from resnet_repro.models.zoo import names

_COLUMNS = ("name", "family", "dataset", "depth", "block", "shortcut", "params", "flops")


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="list the nets with parameters and FLOPs",
        description="List nets with their parameter count and FLOPs (multiply-adds, one image at the "
        "native input size: 32x32 for CIFAR-10, 224x224 for ImageNet).",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="nets to describe, any valid name (default: the papers' nets)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    rows = [describe(name) for name in args.names or names()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cells = [_COLUMNS] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    numeric = {"depth", "params", "flops"}
    for line in cells:
        padded = (c.rjust(w) if key in numeric else c.ljust(w) for c, w, key in zip(line, widths, _COLUMNS))
        print("  ".join(padded).rstrip())
    print("flops: multiply-adds for one image at the native input size (torch FlopCounterMode count / 2)")
    return 0


def _cells(row: dict) -> tuple[str, ...]:
    head = (row["name"], row["family"], row["dataset"], str(row["depth"]), row["block"], row["shortcut"] or "-")
    return (*head, f"{row['params']:,}", _si(row["flops"]))


def _si(value: int) -> str:
    return f"{value / 1e9:.2f}G" if value >= 1e9 else f"{value / 1e6:.1f}M"
