"""The first iterations of a CIFAR net, this project's against an independent reference, on the same batches.

    python scripts/early_training_check.py --net ours --depth 56 --iterations 200
    python scripts/early_training_check.py --net reference --depth 56 --iterations 200
    python scripts/early_training_check.py --net ours --depth 56 --iterations 500 --linear-warmup 200

The reference is the CIFAR ResNet of scripts/referee_cifar.py, written from the paper's description alone
and sharing no code with the package (basic blocks, option A shortcuts, Kaiming-normal init), so that a
training problem seen with `resnet_repro.models` can be told apart from a bug in it. Both nets read the
real CIFAR-10 archive, subtract the mean image, and see the same batches (seeded order, 4-pixel pad,
random crop and flip done here in torch), fp32, SGD with momentum 0.9 and weight decay 1e-4, batch 128,
in a plain PyTorch loop.
Prints the mean loss and training error of every 10 iterations (README, "The degradation effect on a
CPU", quotes runs of it).
"""

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from referee_cifar import CifarResNet  # beside this script

from resnet_repro import models
from resnet_repro.data.cifar10 import load_archive

ARCHIVE = Path(__file__).resolve().parents[2] / "shared/data/cifar10/cifar-10-python.tar.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--net", choices=["ours", "reference"], required=True)
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--linear-warmup", type=int, default=0, help="iterations of linear lr ramp (0: none)")
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    args = parser.parse_args()

    arrays = load_archive(args.archive)
    images = torch.from_numpy(arrays.train_images).permute(0, 3, 1, 2).float() / 255
    images -= images.mean(dim=0, keepdim=True)
    labels = torch.from_numpy(arrays.train_labels).long()
    torch.manual_seed(0)
    net = models.build(f"resnet{args.depth}", num_classes=10) if args.net == "ours" else CifarResNet(args.depth)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    data_order = torch.Generator().manual_seed(1)
    order, position = torch.randperm(len(images), generator=data_order), 0
    losses, errors, started = [], [], time.perf_counter()
    for iteration in range(1, args.iterations + 1):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, iteration / args.linear_warmup) if args.linear_warmup else args.lr
        if position + 128 > len(images):
            order, position = torch.randperm(len(images), generator=data_order), 0
        batch = order[position:position + 128]
        position += 128
        padded = F.pad(images[batch], (4, 4, 4, 4))
        x, y = torch.randint(0, 9, (2, 128), generator=data_order)
        flip = torch.rand(128, generator=data_order) < 0.5
        crops = torch.stack([padded[k, :, y[k]:y[k] + 32, x[k]:x[k] + 32] for k in range(128)])
        crops = torch.where(flip[:, None, None, None], crops.flip(3), crops)
        logits = net(crops.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits, labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        errors.append((logits.argmax(1) != labels[batch]).float().mean().item())
        if iteration % 10 == 0 or iteration <= 5:
            print(f"{args.net} resnet{args.depth} iteration {iteration}: loss {sum(losses) / len(losses):.3f}, "
                  f"training error {sum(errors) / len(errors):.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
            losses, errors = [], []


if __name__ == "__main__":
    main()
