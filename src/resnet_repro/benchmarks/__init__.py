"""The `bench train`, `bench precisions` and `bench startup` measurements: training throughput
(`throughput.py`), the bf16-against-fp32 check (`precision.py`) and a stage's start-up (`startup.py`,
whose stage processes run `stage_start.py`). `bench loader` is data.bench: it needs no model."""
