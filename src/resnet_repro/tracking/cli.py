"""`resnet-repro pull` and `resnet-repro predict`: registered models from the command line."""

import argparse
from pathlib import Path

# The registry (and so mlflow, ~3 s to import) is imported by the commands that use it, so that
# `resnet-repro models` and `--help` stay quick.

_REF_FORMS = "models:/NAME@ALIAS, NAME@ALIAS, NAME/VERSION or NAME/latest, e.g. cifar10-resnet56@champion"


def add_commands(commands: argparse._SubParsersAction) -> None:
    pull_parser = commands.add_parser(
        "pull", help="download a registered model's files, verified",
        description="Download a registered model version (model.safetensors, preprocess.safetensors, model.json, "
                    "card.json) into DIR, after checking the sha256 of its tensor files against the registry.")
    pull_parser.add_argument("ref", metavar="REF", help=_REF_FORMS)
    pull_parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write the files to")
    _add_tracking_uri_option(pull_parser)
    pull_parser.set_defaults(handler=run_pull)

    predict_parser = commands.add_parser(
        "predict", help="classify image files with a registered model",
        description="Print one line per image: path, most likely class, its probability (tab-separated). "
                    "Images not at the net's input size are resized, with a warning on stderr.")
    predict_parser.add_argument("--model", required=True, metavar="REF", help=_REF_FORMS)
    _add_tracking_uri_option(predict_parser)
    predict_parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG or JPEG files")
    predict_parser.set_defaults(handler=run_predict)


def _add_tracking_uri_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                             "in the current directory)")


def _tracking_uri(args: argparse.Namespace) -> str:
    from resnet_repro.tracking.runs import resolve_tracking_uri

    return args.tracking_uri or resolve_tracking_uri(Path.cwd(), None)


def run_pull(args: argparse.Namespace) -> int:
    from resnet_repro.tracking.registry import pull

    out_dir = pull(args.ref, args.out, _tracking_uri(args))
    print(f"{args.ref} -> {out_dir}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from resnet_repro.tracking.registry import predict

    for path, class_name, probability in predict(args.model, args.images, _tracking_uri(args)):
        print(f"{path}\t{class_name}\t{probability:.4f}")
    return 0
