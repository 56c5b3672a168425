"""A widely used public PyTorch reproduction of the paper's CIFAR-10 nets (ResNet-20 8.27 %) on this archive.

Two measurements that need none of this project's code, only a checkout of that reproduction
(github.com/akamaster/pytorch_resnet_cifar10, its `resnet.py`, `trainer.py` and `pretrained_models/`):

    python public_reproduction.py score REPO ARCHIVE [--arch resnet20]
        its published weights, trained on the official lossless CIFAR-10, scored on ARCHIVE's test set
        with its own model and its own normalisation
    python -u public_reproduction.py train REPO ARCHIVE [--epochs 21 --milestones 10 15] > DIR/log.txt
        its own `trainer.py`, unchanged, trained on ARCHIVE on the CPU; its log on standard output
    python public_reproduction.py summarise --out DIR
        DIR/log.txt's test error after each epoch as DIR/curve.tsv and DIR/result.json

For `train`, three things are patched from outside, none of them the recipe: torchvision's md5 check
(the rebuilt archive cannot match the official md5s), `.cuda()` (a no-op on a CPU-only machine), and
the epochs of the lr drops (the trainer hard-codes 100 and 150 of 200; `--milestones` shortens the
schedule as the 8k-iteration runs beside this file do: 21 epochs of 391 iterations = 8,211 iterations,
drops at 3,910 and 5,865).
"""

import argparse
import json
import os
import pickle
import re
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

WEIGHTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
ITERATIONS_PER_EPOCH = 391  # ceil(50,000 / 128): the trainer keeps the last, short batch


def read_test_set(archive: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/test_batch"))
        batch = pickle.load(tar.extractfile(member), encoding="bytes")
    images = torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32)).float() / 255
    return images, torch.tensor(batch[b"labels"])


def score(repo: Path, archive: Path, arch: str) -> None:
    sys.path.insert(0, str(repo))
    import resnet  # the reproduction's own model

    model = resnet.__dict__[arch]()
    state = torch.load(repo / "pretrained_models" / WEIGHTS[arch], map_location="cpu")["state_dict"]
    model.load_state_dict({key.removeprefix("module."): value for key, value in state.items()})
    model.eval()
    # The reproduction's own normalisation (trainer.py), not this project's per-pixel mean.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    images, labels = read_test_set(archive)
    with torch.no_grad():
        predictions = torch.cat([model((chunk - mean) / std).argmax(1) for chunk in images.split(500)])
    wrong = predictions != labels
    per_class = " ".join(f"{wrong[labels == c].float().mean().item():.1%}" for c in range(10))
    print(f"{arch} ({WEIGHTS[arch]}) on {archive}: {wrong.float().mean().item():.2%} test error "
          f"({int(wrong.sum())} of {len(labels)}); per class {per_class}")


def train(repo: Path, archive: Path, epochs: int, drops: list[int]) -> None:
    import torchvision.datasets.cifar

    # The trainer reads ./data/cifar-10-batches-py and writes ./save: both stay out of this folder.
    workdir = tempfile.TemporaryDirectory(prefix="public-reproduction-")
    with tarfile.open(archive) as tar:
        tar.extractall(Path(workdir.name) / "data", filter="data")
    torchvision.datasets.cifar.check_integrity = lambda *args, **kwargs: True
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    multistep = torch.optim.lr_scheduler.MultiStepLR

    def shortened(optimizer, milestones, **kwargs):  # the trainer's [100, 150] replaced by drops
        return multistep(optimizer, milestones=drops, **kwargs)

    torch.optim.lr_scheduler.MultiStepLR = shortened
    sys.path.insert(0, str(repo))
    os.chdir(workdir.name)
    torch.manual_seed(0)
    sys.argv = ["trainer.py", "--arch", "resnet20", "--epochs", str(epochs), "--workers", "1",
                "--save-dir", "save"]
    import trainer  # the reproduction's own training loop, run as its README runs it

    trainer.main()
    workdir.cleanup()


def summarise(log: Path, out: Path) -> None:
    """The per-epoch test accuracies of the trainer's log as a curve and a result, like referee_cifar.py's."""
    if not log.is_file():
        sys.exit(f"no trainer log at {log}: run `train ... > {log}` first")
    accuracies = [float(value) for value in re.findall(r"^ \* Prec@1 ([\d.]+)$", log.read_text(), re.M)]
    if not accuracies:
        sys.exit(f"{log} holds no test accuracy (' * Prec@1 ...' lines): not a log of trainer.py")
    rows = [(epoch * ITERATIONS_PER_EPOCH, 1 - accuracy / 100) for epoch, accuracy in enumerate(accuracies, 1)]
    (out / "curve.tsv").write_text("iteration\ttest_error\n" + "".join(f"{i}\t{e:.4f}\n" for i, e in rows))
    result = {"depth": 20, "epochs": len(rows), "iterations": rows[-1][0], "test_error": round(rows[-1][1], 4)}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("score", "train"):
        command = commands.add_parser(name)
        command.add_argument("repo", type=Path, help="checkout of akamaster/pytorch_resnet_cifar10")
        command.add_argument("archive", type=Path, help="a CIFAR-10 python archive (.tar.gz)")
    commands.choices["score"].add_argument("--arch", default="resnet20", choices=sorted(WEIGHTS))
    commands.choices["train"].add_argument("--epochs", type=int, default=21)
    commands.choices["train"].add_argument("--milestones", type=int, nargs=2, default=[10, 15])
    commands.add_parser("summarise").add_argument("--out", type=Path, default=Path("public8k-archive"),
                                                  help="the folder whose log.txt train wrote")
    args = parser.parse_args()
    if args.command != "summarise":
        if not (args.repo / "resnet.py").is_file() or not (args.repo / "trainer.py").is_file():
            parser.error(f"{args.repo} is not a checkout of akamaster/pytorch_resnet_cifar10 "
                         "(no resnet.py and trainer.py there)")
        if not args.archive.is_file():
            parser.error(f"no archive at {args.archive}")
    if args.command == "score":
        score(args.repo.resolve(), args.archive.resolve(), args.arch)
    elif args.command == "train":
        train(args.repo.resolve(), args.archive.resolve(), args.epochs, args.milestones)
    else:
        summarise(args.out / "log.txt", args.out)


if __name__ == "__main__":
    main()
