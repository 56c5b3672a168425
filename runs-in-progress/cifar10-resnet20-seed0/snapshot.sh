#!/usr/bin/env bash
# Copy the running training's checkpoint and MLflow store into main's runs-in-progress folder, consistently:
# right after the training writes a checkpoint (it flushes its metrics to the store first), with the
# training stopped (SIGSTOP) for the copy.
set -euo pipefail
run=/work/runs/r20
dest=/work/main/runs-in-progress/cifar10-resnet20-seed0
ckpt=$run/checkpoints/resnet20/seed0/checkpoint.pt
# The python process itself (DVC starts it directly; a shell in between would be stopped in its place).
# No such process: the training has stopped (SIGTERM saves a last checkpoint), so copy as things are.
pid=$(pgrep -x -f "python pipeline/train.py --variant resnet20 --seed 0" || true)
if [ -n "$pid" ]; then
  before=$(stat -c %y "$ckpt")
  for i in $(seq 1 1500); do  # at most 150 s: checkpoints come every 60 s
    [ "$(stat -c %y "$ckpt")" != "$before" ] && break
    sleep 0.1
  done
  kill -STOP "$pid"
  trap 'kill -CONT "$pid"' EXIT
fi
cp "$ckpt" "$dest/checkpoint.pt.tmp"
python3 -c "import sqlite3; s=sqlite3.connect('file:$run/mlflow.db?mode=ro', uri=True, timeout=5); d=sqlite3.connect('$dest/mlflow.db.tmp'); s.backup(d); d.close()"
[ -n "$pid" ] && { kill -CONT "$pid"; trap - EXIT; }
mv "$dest/checkpoint.pt.tmp" "$dest/checkpoint.pt"
mv "$dest/mlflow.db.tmp" "$dest/mlflow.db"
/work/main/.venv/bin/python - "$dest" <<'PY'
import sqlite3, sys, torch
dest = sys.argv[1]
state = torch.load(f"{dest}/checkpoint.pt", map_location="cpu", weights_only=True)
step = sqlite3.connect(f"file:{dest}/mlflow.db?mode=ro", uri=True).execute(
    "select max(step) from metrics where key='loss' and run_uuid=?", (state["run_id"],)).fetchone()[0]
print(f"checkpoint at iteration {state['iteration']}, store's last loss step {step}",
      "consistent" if step <= state["iteration"] else "STORE AHEAD")
PY
