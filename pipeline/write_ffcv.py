"""ffcv: the prepared splits -> FFCV datasets (.beton), one per split. (Not named ffcv.py: it would shadow the ffcv package.)"""

from _stage import run_stage

from resnet_repro.stages.prepare import write_ffcv

if __name__ == "__main__":
    run_stage("ffcv", write_ffcv)
