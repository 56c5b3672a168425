"""Write a copy of the CIFAR-10 python archive with every image JPEG-compressed once more, as the archive's
own source was (Pillow, quality 75, 4:2:0), on a grid shifted by one pixel so the pass is not idempotent.

    python rejpeg_archive.py ../../../shared/data/cifar10/cifar-10-python.tar.gz rejpeg.tar.gz
"""

import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def rejpeg(rows: np.ndarray) -> np.ndarray:
    images = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        canvas = np.pad(image, ((1, 0), (1, 0), (0, 0)), mode="edge")  # content at (1, 1): grid shifted
        buffer = io.BytesIO()
        Image.fromarray(canvas).save(buffer, format="JPEG", quality=75, subsampling="4:2:0")
        out[i] = np.asarray(Image.open(buffer).convert("RGB"))[1:, 1:]
    return out.transpose(0, 3, 1, 2).reshape(len(rows), -1)

source, target = Path(sys.argv[1]), Path(sys.argv[2])
with tarfile.open(source) as src, tarfile.open(target, "w:gz") as dst:
    for member in src.getmembers():
        data = src.extractfile(member).read() if member.isfile() else None
        if data is not None and Path(member.name).name.startswith(("data_batch", "test_batch")):
            batch = pickle.loads(data, encoding="bytes")
            before = batch[b"data"]
            batch[b"data"] = rejpeg(before)
            print(member.name, "mean |change|", np.abs(batch[b"data"].astype(int) - before).mean().round(3), flush=True)
            data = pickle.dumps(batch)
            member.size = len(data)
        dst.addfile(member, io.BytesIO(data) if data is not None else None)
