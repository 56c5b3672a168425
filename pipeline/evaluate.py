"""evaluate@<variant>: test (and val) top-1/top-5 error of the trained net."""

from _stage import run_stage

from resnet_repro.stages.evaluate import evaluate_variant

if __name__ == "__main__":
    run_stage("evaluate", evaluate_variant, per_variant=True)
