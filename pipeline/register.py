"""register@<variant>: log the trained net to MLflow and register it as <dataset>-<variant>."""

from _stage import run_stage

from resnet_repro.stages.register import register_variant

if __name__ == "__main__":
    run_stage("register", register_variant, per_variant=True)
