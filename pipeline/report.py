"""report: the paper's table beside the measured one, plain vs residual, and the paper's figures
(reports/study.md, reports/study.json, reports/figures/*.png)."""

from _stage import run_stage

from resnet_repro.stages.report import write_report

if __name__ == "__main__":
    run_stage("report", write_report)
