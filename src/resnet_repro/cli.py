"""The `resnet-repro` command line. Each area of the package adds its own subcommands."""

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from resnet_repro import studies
    from resnet_repro.data import cli as data_cli
    from resnet_repro.models import cli as models_cli
    from resnet_repro.tracking import cli as tracking_cli

    parser = argparse.ArgumentParser(
        prog="resnet-repro",
        description="Deep Residual Learning (He et al., 2015) reproduced: list the nets and studies, select a "
                    "study, pull registered models and classify images. The pipeline itself runs with `dvc repro`.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models_cli.add_commands(commands)
    tracking_cli.add_commands(commands)
    data_cli.add_commands(commands)
    studies.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except (ValueError, LookupError, FileNotFoundError, ConnectionError) as error:
        print(f"resnet-repro {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
