"""Continue a project checkpoint (weights and SGD momentum) with the referee's own loop: its data reading,
crops, flips, mean, SGD at the recipe's lr (0.1, /10 at 32k and 48k); train and test error every --eval-every.

    python continue_referee.py checkpoint-30693.pt --until 34000
"""

import argparse
import time

import torch
import torch.nn.functional as F
from common import referee, referee_model

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint")
parser.add_argument("--archive", default="../../../shared/data/cifar10/cifar-10-python.tar.gz")
parser.add_argument("--until", type=int, default=34000)
parser.add_argument("--eval-every", type=int, default=1000)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--seed", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)

checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
model = referee_model(checkpoint)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
saved = checkpoint["optimizer"]
# One parameter group holding every parameter in the model's order, as the paper's optimizer has.
assert len(saved["param_groups"]) == 1 and len(saved["param_groups"][0]["params"]) == len(list(model.parameters()))
for index, parameter in enumerate(model.parameters()):
    optimizer.state[parameter]["momentum_buffer"] = saved["state"][index]["momentum_buffer"].clone()
print("resumed project checkpoint at", checkpoint["iteration"], "project group:",
      {k: v for k, v in saved["param_groups"][0].items() if k != "params"}, flush=True)

data = referee.read_archive(args.archive)
train_images, train_labels = (torch.from_numpy(a) for a in data["train"])
test_images, test_labels = (torch.from_numpy(a) for a in data["test"])
mean = train_images.float().mean(0)
padded = F.pad(train_images, (4, 4, 4, 4))
generator = torch.Generator().manual_seed(args.seed)
iteration = checkpoint["iteration"]
print(f"iteration {iteration}: test error {referee.error(model, test_images, test_labels, mean):.4f}", flush=True)

wrong = seen = 0
started = time.perf_counter()
while iteration < args.until:
    order = torch.randperm(len(train_images), generator=generator)
    for start in range(0, len(order) - 127, 128):
        if iteration >= args.until:
            break
        for group in optimizer.param_groups:
            group["lr"] = 0.1 if iteration < 32000 else 0.01 if iteration < 48000 else 0.001
        index = order[start:start + 128]
        images = referee.augmented_batch(padded, index, generator).float()
        logits = model(((images - mean) / 255).contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits, train_labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        iteration += 1
        wrong += (logits.argmax(1) != train_labels[index]).sum().item()
        seen += len(index)
        if iteration % args.eval_every == 0:
            rate = seen / (time.perf_counter() - started)
            test_error = referee.error(model, test_images, test_labels, mean)
            print(f"iteration {iteration}: train error {wrong / seen:.4f} test error {test_error:.4f} ({rate:.0f} img/s)",
                  flush=True)
            wrong = seen = 0
            started = time.perf_counter()
