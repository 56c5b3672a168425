"""What every stage script shares: load and validate params.yaml, then run, with one-line errors."""

import argparse
import os
import sys
from pathlib import Path

# DVC runs each stage from the project root; the scripts find it from their own location anyway.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_stage(name: str, stage, per_variant: bool = False) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from resnet_repro.config import ConfigError, load_params
    from resnet_repro.data.errors import DataError
    from resnet_repro.layout import Layout
    from resnet_repro.train.errors import CheckpointError, TrainingDiverged

    parser = argparse.ArgumentParser(prog=f"pipeline/{Path(sys.argv[0]).name}")
    if per_variant:
        parser.add_argument("--variant", required=True)
        parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    try:
        params = load_params(PROJECT_ROOT / "params.yaml")
        layout = Layout(PROJECT_ROOT, params.data.dataset)
        if not per_variant:
            stage(params, layout)
            return
        if args.variant not in params.study.variants or args.seed not in params.study.seeds:
            raise ConfigError(f"params.yaml: {args.variant} seed {args.seed} is not in study.variants "
                              f"{params.study.variants} x study.seeds {params.study.seeds}")
        stage(params, layout, args.variant, args.seed)
    # Bad input and known failure modes get one line; anything else is a bug and keeps its traceback.
    except (ConfigError, DataError, TrainingDiverged, CheckpointError, ConnectionError, FileNotFoundError) as error:
        sys.exit(f"{name}: error: {error}")
