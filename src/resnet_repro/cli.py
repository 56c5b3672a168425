"""The `resnet-repro` command line: every command's options, and the handlers that run them.

The parser is built from argparse alone, so that `--help` and mistyped options answer at once. Each
handler imports the code it runs (torch, FFCV, MLflow: seconds each) only once its command is chosen;
tests/test_cli.py checks that building the parser imports none of them.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from resnet_repro.layout import STUDY_JSON, Layout

_REF_FORMS = "models:/NAME@ALIAS, NAME@ALIAS, NAME/VERSION or NAME/latest, e.g. cifar10-resnet56@champion"
_MODEL_COLUMNS = ("name", "family", "dataset", "depth", "block", "shortcut", "params", "flops")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resnet-repro",
        description="Deep Residual Learning (He et al., 2015) reproduced: list the nets and studies, select a "
                    "study, pull registered models and classify images. The pipeline itself runs with `dvc repro`.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_models_command(commands)
    _add_registry_commands(commands)
    _add_bench_commands(commands)
    _add_study_commands(commands)
    _add_recipe_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except BrokenPipeError:  # `resnet-repro models | head`: the reader left; say nothing (Python's docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, LookupError, FileNotFoundError, ConnectionError) as error:
        print(f"resnet-repro {args.command}: error: {error}", file=sys.stderr)
        return 2


# --- models: the nets with their parameter and multiply-add counts ---------------------------------

def _add_models_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="list the nets with parameters and FLOPs",
        description="List nets with their parameter count and FLOPs (multiply-adds, one image at the "
        "native input size: 32x32 for CIFAR-10, 224x224 for ImageNet).",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME",
        help="nets to describe, any valid name (default: the papers' nets, and resnet18-cifar with its plain twin)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    parser.set_defaults(handler=_models)


def _models(args: argparse.Namespace) -> int:
    from resnet_repro.models.audit import describe
    from resnet_repro.models.zoo import names

    rows = [describe(name) for name in args.names or names()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cells = [_MODEL_COLUMNS] + [_model_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_MODEL_COLUMNS))]
    numeric = {"depth", "params", "flops"}
    for line in cells:
        padded = (c.rjust(w) if key in numeric else c.ljust(w) for c, w, key in zip(line, widths, _MODEL_COLUMNS))
        print("  ".join(padded).rstrip())
    print("flops: multiply-adds for one image at the native input size (torch FlopCounterMode count / 2)")
    return 0


def _model_cells(row: dict) -> tuple[str, ...]:
    head = (row["name"], row["family"], row["dataset"], str(row["depth"]), row["block"], row["shortcut"] or "-")
    flops = row["flops"]
    return (*head, f"{row['params']:,}", f"{flops / 1e9:.2f}G" if flops >= 1e9 else f"{flops / 1e6:.1f}M")


# --- pull and predict: registered models ------------------------------------------------------------

def _add_registry_commands(commands: argparse._SubParsersAction) -> None:
    pull_parser = commands.add_parser(
        "pull", help="download a registered model's files, verified",
        description="Download a registered model version (model.safetensors, preprocess.safetensors, model.json, "
                    "card.json) into DIR, after checking the sha256 of its tensor files against the registry.")
    pull_parser.add_argument("ref", metavar="REF", help=_REF_FORMS)
    pull_parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write the files to")
    _add_tracking_uri_option(pull_parser)
    pull_parser.set_defaults(handler=_pull)

    predict_parser = commands.add_parser(
        "predict", help="classify image files with a registered model",
        description="Print one line per image: path, most likely class, its probability (tab-separated). "
                    "Images not at the net's input size are resized, with a warning on stderr.")
    predict_parser.add_argument("--model", required=True, metavar="REF",
                                help=f"{_REF_FORMS}; or published weights, MODEL:WEIGHTS, e.g. resnet20:cifar10")
    _add_tracking_uri_option(predict_parser)
    predict_parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG or JPEG files")
    predict_parser.set_defaults(handler=_predict)


def _add_tracking_uri_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                             "in the current directory)")


def _tracking_uri(args: argparse.Namespace) -> str:
    from resnet_repro.tracking.runs import resolve_tracking_uri

    return args.tracking_uri or resolve_tracking_uri(Path.cwd(), None)


def _pull(args: argparse.Namespace) -> int:
    from resnet_repro.tracking.registry import pull

    out_dir = pull(args.ref, args.out, _tracking_uri(args))
    print(f"{args.ref} -> {out_dir}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from resnet_repro.artifacts import load_published
    from resnet_repro.models.weights import REF as PUBLISHED_REF
    from resnet_repro.tracking.serving import classify_files, with_preprocessing

    if PUBLISHED_REF.fullmatch(args.model):
        # Published weights need no MLflow store, so MLflow is not imported either (it takes 4 s).
        module = with_preprocessing(load_published(args.model))
    else:
        from resnet_repro.tracking.registry import load_registered

        module = load_registered(args.model, _tracking_uri(args))
    for path, class_name, probability in classify_files(module, args.images):
        print(f"{path}\t{class_name}\t{probability:.4f}")
    return 0


# --- bench: loader, train, precisions and startup ---------------------------------------------------
#
# What a training of the project would use (batch size, workers, backend, precision and the other speed
# paths) comes from --params, validated there; an option given on the command line replaces its value.
# Those options default to None, "not given". What only a benchmark has (the net, how many steps to warm
# up and to time) has its default here, once.

_BENCH_MODEL = "resnet20"


def _add_bench_commands(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="measure the speed of parts of the pipeline")
    what = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    _add_bench_train(what)
    _add_bench_precisions(what)
    _add_bench_loader(what)
    _add_bench_startup(what)


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The options among `names` given on the command line: those that replace a value of --params."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _add_batch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, help="default: train.batch_size of --params")
    parser.add_argument("--workers", type=int, help="loader workers (default: loader.num_workers of --params)")


def _add_bench_loader(what: argparse._SubParsersAction) -> None:
    parser = what.add_parser(
        "loader",
        help="training-pipeline images/s of both loader backends and of torchvision",
        description="Steady-state images/s of the FFCV and torch training pipelines and of torchvision's usual "
        "one (PIL + torchvision.transforms + DataLoader), same images, workers and batch size, no model.",
    )
    parser.add_argument("--dataset", choices=["cifar10", "imagefolder"], default="cifar10")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="the augmentation (augment), the batch size and workers, and for an image folder how "
                             "FFCV stores it (data), come from this file (default: ./params.yaml)")
    parser.add_argument("--archive", type=Path, help="the CIFAR-10 python archive (--dataset cifar10)")
    parser.add_argument("--root", type=Path, help="the image folder, holding train/<class>/* (--dataset imagefolder)")
    _add_batch_options(parser)
    parser.add_argument("--warmup-batches", type=int, default=20, help="default: 20")
    parser.add_argument("--batches", dest="timed_batches", metavar="BATCHES", type=int, default=100,
                        help="batches timed per pipeline (default: 100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=_bench_loader)


def _bench_loader(args: argparse.Namespace) -> int:
    source = args.archive if args.dataset == "cifar10" else args.root
    if source is None:
        raise ValueError(f"--dataset {args.dataset} needs {'--archive' if args.dataset == 'cifar10' else '--root'}")
    from resnet_repro.config import load_params
    from resnet_repro.data.bench import BenchSettings, bench_cifar10, bench_imagefolder

    params = load_params(args.params)
    settings = BenchSettings.from_params(params, warmup_batches=args.warmup_batches, timed_batches=args.timed_batches,
                                         **_given(args, "batch_size", "workers"))
    _refuse_non_positive(("--batch-size", settings.batch_size), ("--workers", settings.workers),
                         ("--warmup-batches", settings.warmup_batches), ("--batches", settings.timed_batches))
    bench = bench_cifar10 if args.dataset == "cifar10" else bench_imagefolder
    result = {"dataset": args.dataset, **bench(source, settings, params)}
    if args.json:
        print(json.dumps(result))
        return 0
    for key in ("ffcv_img_per_s", "torch_img_per_s", "torchvision_img_per_s"):
        print(f"{key.removesuffix('_img_per_s'):>12}  {result[key]:>10,.0f} images/s")
    print(f"FFCV is {result['ffcv_over_torchvision']:.1f}x torchvision's usual pipeline "
          f"(batch {settings.batch_size}, {settings.workers} workers, {settings.timed_batches} batches timed)")
    return 0


def _add_project_options(parser: argparse.ArgumentParser, taken: str) -> None:
    """--params and --archive, shared by the benchmarks that run on the project's CIFAR-10."""
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help=f"{taken} come from this file (default: ./params.yaml)")
    parser.add_argument("--archive", type=Path, default=None,
                        help="the CIFAR-10 python archive (default: data.archive of --params, as prepare gets it)")


def _add_training_run_options(parser: argparse.ArgumentParser) -> None:
    """The net, batch, loader and length of a timed training run (bench train, bench precisions)."""
    parser.add_argument("--model", default=_BENCH_MODEL, help=f"default: {_BENCH_MODEL}")
    _add_batch_options(parser)
    parser.add_argument("--backend", choices=["ffcv", "torch"], help="default: loader.backend of --params")
    parser.add_argument("--warmup-steps", type=int, default=20, help="default: 20")
    parser.add_argument("--steps", dest="timed_steps", metavar="STEPS", type=int, default=60,
                        help="steps timed per run (default: 60)")


def _train_bench_settings(args: argparse.Namespace, params, *others: tuple[str, int], **given):
    """bench train's and bench precisions' settings: those of `params`, with the options given (and
    `given`); refused if one of them, or of `others`, is out of range."""
    from resnet_repro.benchmarks.throughput import TrainBenchSettings

    settings = TrainBenchSettings.from_params(params, model=args.model, warmup_steps=args.warmup_steps,
                                              timed_steps=args.timed_steps,
                                              **_given(args, "batch_size", "workers", "backend"), **given)
    _refuse_non_positive(("--batch-size", settings.batch_size), ("--workers", settings.workers),
                         ("--warmup-steps", settings.warmup_steps), ("--steps", settings.timed_steps), *others)
    return settings


def _add_bench_train(what: argparse._SubParsersAction) -> None:
    parser = what.add_parser(
        "train",
        help="end-to-end training images/s (loader + step) against fp32 eager NCHW with torchvision's loader",
        description="Images/s of the training loop on the real CIFAR-10 with the loader backend and speed paths of "
        "--params (or the options), and of the same net in fp32, eager, NCHW, fed by torchvision's usual pipeline "
        "(PIL + torchvision.transforms + DataLoader), same workers and batch. --compare-precision instead trains "
        "briefly in fp32 and in bf16 from the same seed (the recipe of --params shrunk to --iterations; the "
        "paper's: /10 at 1/2 and 3/4) and prints both test errors.")
    _add_project_options(parser, "the recipe (lr, momentum, weight decay, schedule), augmentation, batch size, "
                                 "workers, loader backend and speed paths")
    _add_training_run_options(parser)
    parser.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"],
                        help="default: train.precision of --params")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                        help="default: train.channels_last of --params")
    parser.add_argument("--compile", choices=["auto", "on", "off"], help="default: train.compile of --params")
    parser.add_argument("--device", help="default: train.device of --params")
    parser.add_argument("--compare-precision", action="store_true",
                        help="train --iterations in fp32 and in bf16 (same seed) and print both test errors")
    parser.add_argument("--iterations", type=int, default=400,
                        help="training length of --compare-precision (default: 400)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(handler=_bench_train)


def _bench_train(args: argparse.Namespace) -> int:
    from resnet_repro.config import load_params

    params = load_params(args.params)
    given = _given(args, "precision", "channels_last", "device")
    if args.compile is not None:
        given["compile"] = {"auto": "auto", "on": True, "off": False}[args.compile]
    settings = _train_bench_settings(args, params, ("--iterations", args.iterations), **given)
    archive = args.archive or _project_archive(args.params, "bench train")
    if args.compare_precision:
        from resnet_repro.benchmarks.precision import compare_precisions

        result = compare_precisions(archive, params, model_name=settings.model, iterations=args.iterations,
                                    batch_size=settings.batch_size, workers=settings.workers)
        if not args.json:
            print(f"{settings.model}, {args.iterations} iterations: test error fp32 {result['fp32_test_error']:.4f}, "
                  f"bf16 {result['bf16_test_error']:.4f} (difference {result['max_difference']:.4f})")
    else:
        from resnet_repro.benchmarks.throughput import bench_training

        result = bench_training(archive, settings, params, baseline=True)
        if not args.json:
            print(f"configured {result['img_per_s']:,.0f} images/s, baseline {result['baseline_img_per_s']:,.0f} "
                  f"images/s: {result['speedup']:.2f}x ({settings.model}, batch {settings.batch_size}, "
                  f"{settings.workers} workers, {result['settings']['device']})")
    if args.json:
        print(json.dumps(result))
    return 0


def _refuse_non_positive(*options: tuple[str, int]) -> None:
    """ValueError naming the first of the (option, value) `options` that is not > 0 (--workers may be 0).
    The values that come from --params were checked there; only a given option can be out of range here."""
    for option, value in options:
        if value <= 0 and not (option == "--workers" and value == 0):
            raise ValueError(f"{option} = {value}: must be > 0")


def _add_bench_precisions(what: argparse._SubParsersAction) -> None:
    parser = what.add_parser(
        "precisions",
        help="training images/s in each precision on the GPU, beside the same net on the CPU",
        description="bench train's configured run (loader + step, on the real CIFAR-10; compiled on CUDA, eager on "
        "the CPU) in fp32, bf16 and fp16 on the GPU and on the CPU, as one table. What this machine does not run "
        "(no CUDA; a GPU without bf16 units; bf16 on a CPU without bf16 instructions; fp16 on a CPU) is marked "
        "skipped, with the reason, and not measured.")
    _add_project_options(parser, "the recipe (lr, momentum, weight decay), augmentation, batch size, workers, "
                                 "loader backend, channels_last and compile")
    _add_training_run_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=_bench_precisions)


def _bench_precisions(args: argparse.Namespace) -> int:
    from resnet_repro.benchmarks.throughput import bench_precisions, precision_table
    from resnet_repro.config import load_params

    params = load_params(args.params)
    settings = _train_bench_settings(args, params)
    result = bench_precisions(args.archive or _project_archive(args.params, "bench precisions"), settings, params)
    print(json.dumps(result) if args.json else precision_table(result))
    return 0


def _add_bench_startup(what: argparse._SubParsersAction) -> None:
    parser = what.add_parser(
        "startup",
        help="what a train@ and an evaluate@ stage spend before their work: imports, loaders, compilation",
        description="Runs the start of a train@ and of an evaluate@ stage, each in a fresh Python process as DVC "
        "runs it, on the real CIFAR-10 prepared in a temporary project with the settings of --params, and prints "
        "the seconds of each part: imports, FFCV's import, the set-up (net, step and loaders; the evaluate stage's "
        "loaders), starting the MLflow run, the first training batch (where numba compiles FFCV's pipeline), the "
        "first training step, and two passes over the test split. Nothing is logged to the project's MLflow store.")
    _add_project_options(parser, "the data, loader and training settings of the stages")
    parser.add_argument("--model", default=_BENCH_MODEL, help=f"the net both stages build (default: {_BENCH_MODEL})")
    parser.add_argument("--backend", choices=["ffcv", "torch"], help="loader backend (default: loader.backend)")
    parser.add_argument("--cold", action="store_true",
                        help="start the stages with an empty numba cache, as the first stage after installing does")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=_bench_startup)


def _bench_startup(args: argparse.Namespace) -> int:
    from resnet_repro.benchmarks.startup import STARTUP_PHASES, bench_startup

    archive = args.archive or _project_archive(args.params, "bench startup")
    result = bench_startup(args.params, archive, model=args.model, backend=args.backend, cold=args.cold)
    if args.json:
        print(json.dumps(result))
        return 0
    stages = ("train", "evaluate")
    print(f"{'seconds':<34}" + "".join(f"{stage + '@' + args.model:>20}" for stage in stages))
    for key, label in STARTUP_PHASES.items():
        cells = (f"{result[stage][key]:.2f}" if key in result[stage] else "-" for stage in stages)
        print(f"{label:<34}" + "".join(f"{cell:>20}" for cell in cells))
    print(f"{'fixed cost (see below)':<34}" + "".join(f"{result[stage]['fixed']:>20.2f}" for stage in stages))
    print(f"fixed cost: every part but the evaluations, plus the first evaluation's excess over the second. "
          f"{result['backend']} backend, numba cache {'empty' if args.cold else 'as found'}, "
          f"{result['test_images']} test images")
    return 0


def _project_archive(params_path: Path, command: str) -> Path:
    """The archive the prepare stage of the project of `params_path` reads (downloaded once)."""
    from resnet_repro.config import load_params
    from resnet_repro.data.cifar10 import fetch_archive

    params = load_params(params_path)
    if params.data.dataset != "cifar10":
        raise ValueError(f"{params_path}: data.dataset = {params.data.dataset!r}: {command} needs CIFAR-10 "
                         "(pass --archive)")
    assert params.data.archive is not None  # DataParams requires it for CIFAR-10
    return fetch_archive(params.data.archive, Layout(params_path.parent).raw_dir)


# --- study and recipe: the paper's studies and training recipes, written into params.yaml ----------

def _add_study_commands(commands: argparse._SubParsersAction) -> None:
    study = commands.add_parser("study", help="list the paper's studies, or select one in params.yaml")
    what = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    what.add_parser("list", help="the named studies and their nets").set_defaults(handler=_list_studies)
    choose = what.add_parser("select", help="write a study's nets and settings into params.yaml; then `dvc repro`")
    choose.add_argument("name", help="a study name from `resnet-repro study list`")
    choose.add_argument("--params", type=Path, default=Path("params.yaml"), help="default: ./params.yaml")
    choose.add_argument("--seeds", type=int, nargs="+", help="training seeds (default: keep study.seeds)")
    choose.add_argument("--root", type=Path, help="the image folder of an ImageNet study (sets data.root)")
    choose.set_defaults(handler=_select_study)
    claims = what.add_parser("claims", help="say in words what the last report showed of the paper's claims")
    claims.add_argument("--report", type=Path, default=Layout(Path(".")).reports_dir / STUDY_JSON,
                        help="the report stage's study.json (default: ./reports/study.json)")
    claims.set_defaults(handler=_print_claims)
    dispatch = what.add_parser(
        "run", help="train the study's out-of-date nets at once on Ray (one task per net), then `dvc repro`",
        description="Trains every out-of-date train@ stage of params.yaml's study as its own Ray task (train.nproc "
                    "GPUs each, or a share of the CPUs), in clean clones of this commit, and brings the results back "
                    "through DVC's run-cache: at the end `dvc repro` here restores them and runs evaluate, register "
                    "and report. Needs a clean git tree and a DVC remote every node reaches.")
    dispatch.add_argument("--address", help="a running Ray cluster (default: RAY_ADDRESS, else a local Ray on this "
                                            "machine's GPUs or CPUs)")
    dispatch.add_argument("--checkpoints", type=Path,
                          help="where trainings keep their resumable checkpoints; on a cluster, storage every node "
                               "shares (default: ./checkpoints)")
    dispatch.add_argument("--workspaces", type=Path, help="where each task clones the repository (default: the "
                                                          "temporary directory of its node)")
    dispatch.add_argument("--repository", help="what the tasks clone (default: this directory; on a cluster, an URL "
                                               "or a path every node reaches)")
    dispatch.set_defaults(handler=_run_study)


def _list_studies(args: argparse.Namespace) -> int:
    from resnet_repro.studies import STUDIES

    for study in STUDIES.values():
        print(f"{study.name:28} {study.description}\n{'':28} nets: {', '.join(study.variants)}")
    return 0


def _select_study(args: argparse.Namespace) -> int:
    from resnet_repro.studies import select

    changes = select(args.name, args.params, args.seeds, args.root)
    print(f"{args.params}: selected study {args.name!r}")
    for key, value in changes.items():
        print(f"  {key} = {value}")
    print("Run `dvc repro` (or `dvc exp run`) to train, evaluate, register and report its nets.")
    return 0


def _print_claims(args: argparse.Namespace) -> int:
    from resnet_repro.report.claims import sentences

    try:
        report = json.loads(args.report.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{args.report}: no such file; run `dvc repro report` first") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{args.report}: not valid JSON ({error}); run `dvc repro report` again") from None
    if not isinstance(report, dict) or "claims" not in report:
        raise ValueError(f"{args.report}: no claims table in it (an older report stage wrote it); run `dvc repro report`")
    print(f"What study {report.get('study')!r} showed of the paper's claims (numbers: reports/study.md):")
    for line in sentences(report["claims"]):
        print(f"  {line}")
    return 0


def _run_study(args: argparse.Namespace) -> int:
    from resnet_repro.dispatch.common import StudyRunError
    from resnet_repro.dispatch.driver import run_study

    try:
        outcomes = run_study(Path("."), address=args.address, workspaces=args.workspaces,
                             checkpoints=args.checkpoints, repository=args.repository)
    except StudyRunError as error:
        print(f"resnet-repro study run: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # every training was stopped and saved its checkpoint
        print("resnet-repro study run: interrupted; nothing came back to the workspace", file=sys.stderr)
        return 130
    return 1 if any(outcome.error for outcome in outcomes) else 0


def _add_recipe_commands(commands: argparse._SubParsersAction) -> None:
    from resnet_repro.train.recipe import RECIPES  # plain data: no torch behind it

    recipe = commands.add_parser("recipe", help="list the training recipes, or write one into params.yaml")
    what = recipe.add_subparsers(dest="recipe_command", required=True, metavar="ACTION")
    what.add_parser("list", help="the recipes and their values").set_defaults(handler=_list_recipes)
    choose = what.add_parser("select", help="write a recipe's values into params.yaml's train section")
    choose.add_argument("name", choices=sorted(RECIPES),
                        help="cifar (Section 4.2), imagenet (Section 3.4), or cifar-cosine (not the paper's: 200 "
                             "epochs, cosine lr, weight decay 5e-4, as resnet18-cifar is commonly trained)")
    choose.add_argument("--params", type=Path, default=Path("params.yaml"), help="default: ./params.yaml")
    choose.set_defaults(handler=_select_recipe)


def _list_recipes(args: argparse.Namespace) -> int:
    from resnet_repro.train.recipe import RECIPES

    for name, values in RECIPES.items():
        print(f"{name}:\n" + "".join(f"  {key}: {value}\n" for key, value in values.items()), end="")
    return 0


def _select_recipe(args: argparse.Namespace) -> int:
    from resnet_repro.config import update_params_file
    from resnet_repro.train.recipe import recipe_settings

    changes = recipe_settings(args.name)
    update_params_file(args.params, changes)
    print(f"{args.params}: wrote the {args.name} recipe into train ({len(changes)} keys); "
          f"`dvc params diff` shows what changed")
    return 0


# Last, once every function it calls is defined: `python -m resnet_repro.cli` (`python -m resnet_repro` is __main__.py).
if __name__ == "__main__":
    sys.exit(main())
