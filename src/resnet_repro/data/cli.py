"""`resnet-repro bench loader`: training-pipeline images/s of FFCV, the torch backend and torchvision."""

import argparse
import json
from pathlib import Path

from resnet_repro.data.bench import BenchSettings, bench_cifar10, bench_imagefolder


def add_commands(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="measure the speed of parts of the pipeline")
    what = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    from resnet_repro.train.cli import add_bench_command  # `bench train` lives with the training code

    add_bench_command(what)
    parser = what.add_parser(
        "loader",
        help="training-pipeline images/s of both loader backends and of torchvision",
        description="Steady-state images/s of the FFCV and torch training pipelines and of torchvision's usual "
        "one (PIL + torchvision.transforms + DataLoader), same images, workers and batch size, no model.",
    )
    parser.add_argument("--dataset", choices=["cifar10", "imagefolder"], default="cifar10")
    parser.add_argument("--archive", type=Path, help="the CIFAR-10 python archive (--dataset cifar10)")
    parser.add_argument("--root", type=Path, help="the image folder, holding train/<class>/* (--dataset imagefolder)")
    parser.add_argument("--batch-size", type=int, default=BenchSettings.batch_size)
    parser.add_argument("--workers", type=int, default=BenchSettings.workers)
    parser.add_argument("--warmup-batches", type=int, default=BenchSettings.warmup_batches)
    parser.add_argument("--batches", type=int, default=BenchSettings.timed_batches, help="batches timed per pipeline")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = BenchSettings(batch_size=args.batch_size, workers=args.workers,
                             warmup_batches=args.warmup_batches, timed_batches=args.batches)
    source = args.archive if args.dataset == "cifar10" else args.root
    if source is None:
        raise ValueError(f"--dataset {args.dataset} needs {'--archive' if args.dataset == 'cifar10' else '--root'}")
    bench = bench_cifar10 if args.dataset == "cifar10" else bench_imagefolder
    result = {"dataset": args.dataset, **bench(source, settings)}
    if args.json:
        print(json.dumps(result))
        return 0
    for key in ("ffcv_img_per_s", "torch_img_per_s", "torchvision_img_per_s"):
        print(f"{key.removesuffix('_img_per_s'):>12}  {result[key]:>10,.0f} images/s")
    print(f"FFCV is {result['ffcv_over_torchvision']:.1f}x torchvision's usual pipeline "
          f"(batch {settings.batch_size}, {settings.workers} workers, {settings.timed_batches} batches timed)")
    return 0
