"""An independent referee for the CIFAR-10 numbers: a CIFAR ResNet trained by a minimal PyTorch loop.

It shares no code with resnet_repro, so that a disagreement between the two points at the package.
It reads the "python version" archive itself, augments with plain tensor indexing (4-pixel zero pad,
random 32x32 crop, horizontal flip), subtracts the per-pixel mean, defines the option-A ResNet of
Section 4.2 itself, and trains with the recipe of Section 4.2 (SGD, momentum 0.9, weight decay 1e-4
on every weight, batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, 64k in all).

    python scripts/referee_cifar.py --archive ../shared/data/cifar10/cifar-10-python.tar.gz --out referee

Writes OUT/curve.tsv (train and test error every --eval-every iterations) and OUT/result.json;
OUT/checkpoint.pt lets a killed run resume where it stopped (run the same command again).
"""

import argparse
import json
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def read_archive(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images uint8 NCHW, labels int64), 'test': ...} from the CIFAR-10 python archive."""
    parts = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    with tarfile.open(path) as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        out = {}
        for split, names in parts.items():
            batches = [pickle.load(archive.extractfile(members[name]), encoding="bytes") for name in names]
            images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
            labels = np.concatenate([b[b"labels"] for b in batches]).astype(np.int64)
            out[split] = (images, labels)
    return out


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.extra:  # option A: the new channels are zeros
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, classes: int = 10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def augmented_batch(padded: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32x32 crops of the zero-padded 40x40 images, each flipped with probability 1/2."""
    n = len(index)
    dy, dx = (torch.randint(0, 9, (n,), generator=generator) for _ in range(2))
    grid = torch.arange(32)
    rows = (dy[:, None] + grid)[:, None, :, None]
    cols = (dx[:, None] + grid)[:, None, None, :]
    crops = padded[index[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


@torch.no_grad()
def error(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor) -> float:
    model.eval()
    wrong = 0
    for start in range(0, len(images), 1000):
        x = (images[start:start + 1000].float() - mean) / 255
        wrong += (model(x.contiguous(memory_format=torch.channels_last)).argmax(1) != labels[start:start + 1000]).sum().item()
    model.train()
    return wrong / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=64000)
    parser.add_argument("--milestones", type=int, nargs="*", default=[32000, 48000])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--eval-every", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for training (evaluation stays fp32)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.out / "checkpoint.pt"

    data = read_archive(args.archive)
    train_images, train_labels = (torch.from_numpy(a) for a in data["train"])
    test_images, test_labels = (torch.from_numpy(a) for a in data["test"])
    mean = train_images.float().mean(0)
    padded = F.pad(train_images, (4, 4, 4, 4))

    torch.manual_seed(args.seed)
    model = CifarResNet(args.depth).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, args.milestones, gamma=0.1)
    generator = torch.Generator().manual_seed(args.seed)
    iteration, rows, seconds = 0, [], 0.0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        iteration, rows, seconds = state["iteration"], state["rows"], state["seconds"]
        print(f"resumed at iteration {iteration}", flush=True)

    batches_per_epoch = len(train_images) // args.batch_size
    wrong = seen = 0
    started = time.perf_counter()
    while iteration < args.iterations:
        epoch, position = divmod(iteration, batches_per_epoch)
        order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch))
        index = order[position * args.batch_size:(position + 1) * args.batch_size]
        x = ((augmented_batch(padded, index, generator).float() - mean) / 255).contiguous(memory_format=torch.channels_last)
        y = train_labels[index]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        iteration += 1
        wrong += (logits.argmax(1) != y).sum().item()
        seen += len(y)
        if not torch.isfinite(loss):
            raise SystemExit(f"loss is {loss.item()} at iteration {iteration}")
        if iteration % args.eval_every == 0 or iteration == args.iterations:
            seconds += time.perf_counter() - started
            test_error = error(model, test_images, test_labels, mean)
            rows.append({"iteration": iteration, "train_error": wrong / seen, "test_error": test_error,
                         "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 1)})
            print("\t".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()), flush=True)
            wrong = seen = 0
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                     "generator": generator.get_state(), "iteration": iteration, "rows": rows, "seconds": seconds}
            torch.save(state, checkpoint_path.with_suffix(".tmp"))
            checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)
            started = time.perf_counter()

    with open(args.out / "curve.tsv", "w") as f:
        f.write("iteration\ttrain_error\ttest_error\tlr\tseconds\n")
        f.writelines(f"{r['iteration']}\t{r['train_error']:.4f}\t{r['test_error']:.4f}\t{r['lr']}\t{r['seconds']}\n" for r in rows)
    result = {"depth": args.depth, "iterations": args.iterations, "test_error": rows[-1]["test_error"],
              "images_per_second": round(args.iterations * args.batch_size / rows[-1]["seconds"], 1), "bf16": args.bf16}
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    torch.save(model.state_dict(), args.out / "model.pt")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
