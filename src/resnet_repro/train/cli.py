"""`resnet-repro bench train`: end-to-end training images/s against a plain PyTorch baseline, and a
bf16-vs-fp32 accuracy check."""

import argparse
import json
from pathlib import Path

from resnet_repro.train.bench import TrainBenchSettings, bench_training, compare_precisions


def add_bench_command(what: argparse._SubParsersAction) -> None:
    """Adds `train` to the `bench` subcommands (data/cli.py owns `bench` itself)."""
    defaults = TrainBenchSettings()
    parser = what.add_parser(
        "train",
        help="end-to-end training images/s (loader + step) against fp32 eager NCHW with torchvision's loader",
        description="Images/s of the training loop on the real CIFAR-10 with the configured loader backend and "
        "speed paths, and of the same net in fp32, eager, NCHW, fed by torchvision's usual pipeline (PIL + "
        "torchvision.transforms + DataLoader), same workers and batch. --compare-precision instead trains "
        "briefly in fp32 and in bf16 from the same seed (the paper's CIFAR schedule shrunk to --iterations: "
        "/10 at 1/2 and 3/4) and prints both test errors.")
    parser.add_argument("--archive", type=Path,
                        help="the CIFAR-10 python archive (default: data.archive of ./params.yaml, as prepare gets it)")
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--backend", choices=["ffcv", "torch"], default=defaults.backend)
    parser.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default=defaults.precision)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    parser.add_argument("--steps", type=int, default=defaults.timed_steps, help="steps timed per configuration")
    parser.add_argument("--compare-precision", action="store_true",
                        help="train --iterations in fp32 and in bf16 (same seed) and print both test errors")
    parser.add_argument("--iterations", type=int, default=400, help="training length of --compare-precision")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    for name in ("batch_size", "workers", "warmup_steps", "steps", "iterations"):
        if getattr(args, name) <= 0 and not (name == "workers" and getattr(args, name) == 0):
            raise ValueError(f"--{name.replace('_', '-')} = {getattr(args, name)}: must be > 0")
    archive = args.archive or _project_archive()
    if args.compare_precision:
        result = compare_precisions(archive, model_name=args.model, iterations=args.iterations,
                                    batch_size=args.batch_size, workers=args.workers)
        if not args.json:
            print(f"{args.model}, {args.iterations} iterations: test error fp32 {result['fp32_test_error']:.4f}, "
                  f"bf16 {result['bf16_test_error']:.4f} (difference {result['max_difference']:.4f})")
    else:
        settings = TrainBenchSettings(
            model=args.model, batch_size=args.batch_size, workers=args.workers, backend=args.backend,
            precision=args.precision, channels_last=args.channels_last,
            compile={"auto": "auto", "on": True, "off": False}[args.compile], device=args.device,
            warmup_steps=args.warmup_steps, timed_steps=args.steps)
        result = bench_training(archive, settings)
        if not args.json:
            print(f"configured {result['img_per_s']:,.0f} images/s, baseline {result['baseline_img_per_s']:,.0f} "
                  f"images/s: {result['speedup']:.2f}x ({args.model}, batch {args.batch_size}, "
                  f"{args.workers} workers, {result['settings']['device']})")
    if args.json:
        print(json.dumps(result))
    return 0


def _project_archive() -> Path:
    """The archive the prepare stage of the project in the working directory reads (downloaded once)."""
    from resnet_repro.config import Layout, load_params
    from resnet_repro.data.cifar10 import fetch_archive

    params = load_params("params.yaml")
    if params.data.dataset != "cifar10":
        raise ValueError(f"params.yaml: data.dataset = {params.data.dataset!r}: bench train needs CIFAR-10 "
                         "(pass --archive)")
    return fetch_archive(params.data.archive, Layout(".").raw_dir)
