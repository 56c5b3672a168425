"""What every stage script shares: load and validate params.yaml, then run, with one-line errors."""

import argparse
import os
import sys
from pathlib import Path

# The stage scripts run from the project root (DVC's working directory).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_stage(name: str, stage, per_variant: bool = False) -> None:
    from resnet_repro.config import ConfigError, Layout, load_params

    parser = argparse.ArgumentParser(prog=f"pipeline/{name}.py")
    if per_variant:
        parser.add_argument("--variant", required=True)
        parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        params = load_params(PROJECT_ROOT / "params.yaml")
        layout = Layout(PROJECT_ROOT, params.data.dataset)
        if per_variant:
            if args.variant not in params.study.variants or args.seed not in params.study.seeds:
                raise ConfigError(f"params.yaml: {args.variant} seed {args.seed} is not in study.variants "
                                  f"{params.study.variants} x study.seeds {params.study.seeds}")
            stage(params, layout, args.variant, args.seed)
        else:
            stage(params, layout)
    except ConfigError as error:
        sys.exit(f"{name}: {error}")
