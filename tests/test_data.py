"""resnet_repro.data on the real CIFAR-10 archive and on small archives broken on purpose."""

import builtins
import functools
import hashlib
import http.server
import io
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from resnet_repro.data.augment import Augmentation
from resnet_repro.data.cifar10 import CLASS_NAMES, fetch_archive, load_archive, split_indices
from resnet_repro.data.errors import DataError
from resnet_repro.data.ffcv_io import make_loader, write_beton
from resnet_repro.data.loading import Loader
from resnet_repro.data.normalize import PIXEL_SCALE, normalize
from resnet_repro.data.prepared import read_split, write_split
from resnet_repro.data.stats import image_stats, load_stats, mean_image_tensor, save_stats
from resnet_repro.data.torch_loader import ArrayImages, TorchLoader

CPU = torch.device("cpu")
BATCH_DIR = "cifar-10-batches-py"
TRAIN_MEMBERS = [f"{BATCH_DIR}/data_batch_{i}" for i in range(1, 6)]
TEST_MEMBER = f"{BATCH_DIR}/test_batch"
META_MEMBER = f"{BATCH_DIR}/batches.meta"


# --- the real archive ------------------------------------------------------------------------------

def test_real_archive_has_the_cifar10_counts_shapes_and_labels(cifar10):
    assert cifar10.train_images.shape == (50_000, 32, 32, 3)
    assert cifar10.test_images.shape == (10_000, 32, 32, 3)
    assert cifar10.train_images.dtype == cifar10.test_images.dtype == np.uint8
    assert cifar10.train_images.flags.c_contiguous and cifar10.test_images.flags.c_contiguous
    assert cifar10.train_labels.dtype == cifar10.test_labels.dtype == np.int64
    assert np.bincount(cifar10.train_labels).tolist() == [5000] * 10
    assert np.bincount(cifar10.test_labels).tolist() == [1000] * 10
    assert cifar10.class_names == CLASS_NAMES


def test_real_archive_pixels_are_rgb_in_hwc_order(cifar10):
    # The archive's README publishes the first red values of the official train image 0 (a frog,
    # row 6 of this copy) and test image 0 (a cat, row 3): they are the first row's R channel.
    assert cifar10.train_images[6, 0, :3, 0].tolist() == [61, 48, 56]
    assert cifar10.test_images[3, 0, :9, 0].tolist() == [167, 166, 168, 177, 162, 160, 176, 158, 167]


# --- broken archives -------------------------------------------------------------------------------

def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def synthetic_batch() -> dict[bytes, object]:
    """A batch in the real files' layout (Python-2 byte-string keys), all images black."""
    return {
        b"batch_label": b"synthetic",
        b"labels": [row % 10 for row in range(10_000)],
        b"data": np.zeros((10_000, 3072), dtype=np.uint8),
        b"filenames": [],
    }


def synthetic_meta() -> dict[bytes, object]:
    return {b"label_names": [name.encode() for name in CLASS_NAMES], b"num_cases_per_batch": 10_000}


def dump(obj: object) -> bytes:
    # Protocol 4 pickles numpy arrays through _reconstruct like the real files, and bytes natively
    # (protocol 2 would need _codecs.encode, which the real Python-2 files never reference).
    return pickle.dumps(obj, protocol=4)


@pytest.fixture(scope="module")
def valid_members() -> dict[str, bytes]:
    batch = dump(synthetic_batch())
    return {META_MEMBER: dump(synthetic_meta()), **{name: batch for name in TRAIN_MEMBERS}, TEST_MEMBER: batch}


def test_a_synthetic_archive_in_the_real_layout_loads(tmp_path, valid_members):
    # The control for the corruption tests below: they fail only because of what they break.
    arrays = load_archive(write_tar_gz(tmp_path / "synthetic.tar.gz", valid_members))
    assert arrays.train_images.shape == (50_000, 32, 32, 3)
    assert arrays.test_labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


REMOVED = object()


@pytest.mark.parametrize(
    ("member", "changes", "message"),
    [
        pytest.param(TRAIN_MEMBERS[1], {b"labels": [0] * 7 + [10] + [0] * 9992},
                     r"data_batch_2: key 'labels' has value 10 at row 7, outside 0\.\.9", id="label-too-big"),
        pytest.param(TRAIN_MEMBERS[3], {b"labels": [0] * 9999},
                     r"data_batch_4: key 'labels' has 9999 entries for 10000 images", id="labels-missing"),
        pytest.param(TRAIN_MEMBERS[0], {b"data": np.zeros((10_000, 3072), dtype=np.int16)},
                     r"data_batch_1: key 'data' must be a uint8 array .* got int16 array", id="data-dtype"),
        pytest.param(TEST_MEMBER, {b"data": REMOVED},
                     r"test_batch: key 'data' is missing", id="data-key-missing"),
        pytest.param(META_MEMBER, {b"label_names": [b"cat", b"dog"]},
                     r"batches\.meta: key 'label_names' is \['cat', 'dog'\]", id="class-names"),
    ],
)
def test_invalid_contents_are_reported_with_file_member_key_and_value(
    tmp_path, valid_members, member, changes, message
):
    content = synthetic_meta() if member == META_MEMBER else synthetic_batch()
    for key, value in changes.items():
        if value is REMOVED:
            del content[key]
        else:
            content[key] = value
    archive = write_tar_gz(tmp_path / "broken.tar.gz", {**valid_members, member: dump(content)})
    with pytest.raises(DataError, match=message) as error:
        load_archive(archive)
    assert str(archive) in str(error.value)


class CallOnLoad:
    """Pickles as the call `function(*args)`, which a plain pickle.load would execute."""

    def __init__(self, function, *args):
        self.call = (function, args)

    def __reduce__(self):
        return self.call


@pytest.mark.parametrize(
    "make_payload",
    [
        pytest.param(lambda marker: CallOnLoad(os.system, f"touch {marker}"), id="os.system"),
        pytest.param(lambda marker: CallOnLoad(builtins.eval, f"open({str(marker)!r}, 'w')"), id="eval"),
        pytest.param(lambda marker: CallOnLoad(subprocess.Popen, ["touch", str(marker)]), id="Popen"),
    ],
)
def test_malicious_pickle_is_refused_without_running_it(tmp_path, make_payload):
    marker = tmp_path / "pwned"
    payload = make_payload(marker)
    archive = write_tar_gz(tmp_path / "evil.tar.gz", {TRAIN_MEMBERS[0]: dump(payload)})
    with pytest.raises(DataError, match=rf"data_batch_1: refused to load global .*{payload.call[0].__name__}"):
        load_archive(archive)
    assert not marker.exists()


@pytest.mark.parametrize(("kept_bytes", "member"), [(100, None), (5_000_000, TRAIN_MEMBERS[0])])
def test_truncated_archive_is_reported(tmp_path, cifar10_archive, kept_bytes, member):
    truncated = tmp_path / "truncated.tar.gz"
    with open(cifar10_archive, "rb") as source:
        truncated.write_bytes(source.read(kept_bytes))
    with pytest.raises(DataError, match="not a readable .tar.gz archive") as error:
        load_archive(truncated)
    assert str(truncated) in str(error.value)
    if member:
        assert f"while reading member {member}" in str(error.value)


def test_garbage_and_missing_files_are_reported(tmp_path):
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(np.random.default_rng(0).bytes(10_000))
    with pytest.raises(DataError, match=re.escape(f"{garbage}: not a readable .tar.gz archive")):
        load_archive(garbage)
    with pytest.raises(DataError, match="does-not-exist.tar.gz does not exist"):
        load_archive(tmp_path / "does-not-exist.tar.gz")


def test_missing_member_is_named(tmp_path):
    present = [META_MEMBER, *TRAIN_MEMBERS, TEST_MEMBER]
    present.remove(TRAIN_MEMBERS[2])
    archive = write_tar_gz(tmp_path / "incomplete.tar.gz", {name: dump({}) for name in present})
    with pytest.raises(DataError, match=re.escape(f"{archive}: archive has no member {BATCH_DIR}/data_batch_3") + "$"):
        load_archive(archive)


# --- fetching --------------------------------------------------------------------------------------

@dataclass
class FileServer:
    base_url: str
    requests: list[str]


@pytest.fixture(scope="module")
def file_server(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving `archive.tar.gz`, recording the paths requested."""
    root = tmp_path_factory.mktemp("served")
    (root / "archive.tar.gz").write_bytes(b"not really an archive\n" * 1000)
    requests = []

    class RecordingHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(RecordingHandler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield FileServer(f"http://127.0.0.1:{server.server_port}", requests)
    server.shutdown()
    server.server_close()


def test_download_is_verified_and_not_repeated(tmp_path, file_server):
    url = f"{file_server.base_url}/archive.tar.gz"
    md5 = hashlib.md5(b"not really an archive\n" * 1000).hexdigest()
    raw_dir = tmp_path / "raw"
    path = fetch_archive(url, raw_dir, md5=md5)
    assert path == raw_dir / "archive.tar.gz"
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5
    assert os.listdir(raw_dir) == ["archive.tar.gz"]
    requests_so_far = len(file_server.requests)
    assert fetch_archive(url, raw_dir, md5=md5) == path
    assert len(file_server.requests) == requests_so_far


def test_download_with_wrong_md5_is_refused_and_discarded(tmp_path, file_server):
    url = f"{file_server.base_url}/archive.tar.gz"
    actual = hashlib.md5(b"not really an archive\n" * 1000).hexdigest()
    with pytest.raises(DataError, match=re.escape(f"{url}: downloaded file has md5 {actual}, expected {'0' * 32}")):
        fetch_archive(url, tmp_path, md5="0" * 32)
    assert os.listdir(tmp_path) == []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("unreachable", ["closed-port", "not-found"])
def test_unreachable_url_says_so_and_suggests_a_local_archive(tmp_path, file_server, unreachable):
    if unreachable == "closed-port":
        url = f"http://127.0.0.1:{closed_port()}/x.tar.gz"
    else:
        url = f"{file_server.base_url}/missing.tar.gz"
    with pytest.raises(DataError, match=rf"cannot download {re.escape(url)}: .* set data\.archive to its local path"):
        fetch_archive(url, tmp_path)
    assert os.listdir(tmp_path) == []


def test_local_archive_is_used_in_place(tmp_path, cifar10_archive):
    raw_dir = tmp_path / "raw"
    assert fetch_archive(str(cifar10_archive), raw_dir) == cifar10_archive.resolve()
    assert not raw_dir.exists()
    with pytest.raises(DataError, match="nowhere.tar.gz does not exist"):
        fetch_archive(str(tmp_path / "nowhere.tar.gz"), raw_dir)


# --- splits ----------------------------------------------------------------------------------------

def test_paper_split_is_stratified_disjoint_and_complete(cifar10):
    labels = cifar10.train_labels
    train, val = split_indices(labels, subset=None, val_size=5000, seed=0)
    assert np.bincount(labels[val]).tolist() == [500] * 10
    assert np.bincount(labels[train]).tolist() == [4500] * 10
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)


def test_subset_spreads_the_remainder_over_the_lowest_labels(cifar10):
    labels = cifar10.train_labels
    train, val = split_indices(labels, subset=1005, val_size=5000, seed=0)
    assert np.bincount(labels[train]).tolist() == [101] * 5 + [100] * 5
    assert np.bincount(labels[val]).tolist() == [500] * 10
    assert not np.intersect1d(train, val).size


def test_split_is_a_function_of_the_seed(cifar10):
    labels = cifar10.train_labels
    first = split_indices(labels, subset=1000, val_size=500, seed=3)
    again = split_indices(labels, subset=1000, val_size=500, seed=3)
    other = split_indices(labels, subset=1000, val_size=500, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_no_validation_set_keeps_all_training_images(cifar10):
    train, val = split_indices(cifar10.train_labels, subset=None, val_size=0, seed=0)
    assert len(train) == 50_000 and len(val) == 0


@pytest.mark.parametrize(
    ("subset", "val_size", "message"),
    [
        (45_001, 5000, r"subset \(45001\) \+ val_size \(5000\) = 50001 exceeds the 50000 images"),
        (None, 5, r"val_size=5 is too small to give each of the 10 classes at least one image"),
        (9, 5000, r"subset=9 is too small"),
        (0, 5000, r"subset >= 1"),
    ],
)
def test_impossible_splits_are_refused(cifar10, subset, val_size, message):
    with pytest.raises(ValueError, match=message):
        split_indices(cifar10.train_labels, subset=subset, val_size=val_size, seed=0)


# --- statistics ------------------------------------------------------------------------------------

def test_streamed_stats_equal_numpy_on_the_whole_array():
    images = np.random.default_rng(0).integers(0, 256, size=(37, 5, 7, 3), dtype=np.uint8)
    stats = image_stats(images, batch=8)  # 37 = 4 * 8 + 5: the last chunk is partial
    pixels = images.reshape(-1, 3) / 255.0
    close = functools.partial(np.testing.assert_allclose, rtol=1e-10, atol=1e-13)
    assert stats["num_images"] == 37
    close(stats["mean_image"], images.mean(axis=0))
    close(stats["channel_mean"], pixels.mean(axis=0))
    close(stats["channel_std"], pixels.std(axis=0))
    close(stats["rgb_cov"], np.cov(pixels, rowvar=False, bias=True))
    assert np.all(np.diff(stats["eigval"]) < 0)
    close(stats["rgb_cov"] @ stats["eigvec"], stats["eigvec"] * stats["eigval"])
    close(stats["eigvec"].T @ stats["eigvec"], np.eye(3))


def test_real_train_stats_match_the_archive_readme(cifar10):
    stats = image_stats(cifar10.train_images)
    np.testing.assert_allclose(stats["channel_mean"], [0.49125, 0.48209, 0.44652], atol=1e-4)
    np.testing.assert_allclose(stats["channel_std"], [0.24523, 0.24278, 0.26063], atol=1e-4)


def test_stats_survive_a_json_round_trip(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(4, 5, 7, 3), dtype=np.uint8)
    stats = image_stats(images)
    save_stats(tmp_path / "stats.json", stats)
    loaded = load_stats(tmp_path / "stats.json")
    assert loaded.keys() == stats.keys()
    for key, value in stats.items():
        np.testing.assert_array_equal(loaded[key], value)
    mean = mean_image_tensor(loaded)
    assert mean.shape == (3, 5, 7) and mean.dtype == torch.float32
    assert torch.allclose(mean, torch.from_numpy(images.mean(axis=0)).permute(2, 0, 1).float())


def test_unreadable_stats_are_reported(tmp_path):
    with pytest.raises(DataError, match="missing.json: cannot read statistics"):
        load_stats(tmp_path / "missing.json")
    (tmp_path / "partial.json").write_text('{"num_images": 3}')
    with pytest.raises(DataError, match=r"partial.json: statistics lack key\(s\) \['mean_image'"):
        load_stats(tmp_path / "partial.json")


# --- prepared splits ----------------------------------------------------------------------------------

def test_split_round_trip(tmp_path, cifar10):
    images, labels = cifar10.test_images[:50], cifar10.test_labels[:50].astype(np.int32)
    path = write_split(tmp_path, "val", images, labels)
    assert path == tmp_path / "val.npz" and os.listdir(tmp_path) == ["val.npz"]
    read_images, read_labels = read_split(tmp_path, "val")
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    assert read_labels.dtype == np.int64


def test_missing_or_corrupt_split_is_reported(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'train.npz'}: prepared split 'train' does not exist")):
        read_split(tmp_path, "train")
    (tmp_path / "train.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'train.npz'}: not a readable .npz file")):
        read_split(tmp_path, "train")
    np.savez(tmp_path / "test.npz", images=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"test.npz: missing key\(s\) \['labels'\]"):
        read_split(tmp_path, "test")


# --- FFCV ------------------------------------------------------------------------------------------

TRAIN_IMAGES, TEST_IMAGES = 1000, 200
TRAIN_BATCH = 100
CROP_PADDING = 4
CIFAR_PAPER = Augmentation(crop_size=32, crop_padding=CROP_PADDING)


def test_a_cifar_beton_is_the_same_bytes_every_time_it_is_written(cifar10, tmp_path):
    # DVC hashes the ffcv stage's output: the same data must give the same file, for the train stages'
    # lock entries and run-cache keys to agree between clones.
    digests = set()
    for name in ("first.beton", "second.beton"):
        write_beton(tmp_path / name, cifar10.train_images[:3000], cifar10.train_labels[:3000])
        digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1


@pytest.fixture(scope="module")
def betons(cifar10, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ffcv")
    # The train beton is labelled by row, so that each augmented output names the image it came from.
    write_beton(directory / "train.beton", cifar10.train_images[:TRAIN_IMAGES], np.arange(TRAIN_IMAGES))
    write_beton(directory / "test.beton", cifar10.test_images[:TEST_IMAGES], cifar10.test_labels[:TEST_IMAGES])
    return directory


@pytest.fixture(scope="module")
def mean_image(cifar10) -> torch.Tensor:
    return mean_image_tensor(image_stats(cifar10.train_images[:TRAIN_IMAGES]))


@pytest.fixture(scope="module")
def train_loader(betons, mean_image):
    # Shared: numba compiles the augmentation pipeline on its first epoch, which takes ~15 s.
    return make_loader(betons / "train.beton", augmentation=CIFAR_PAPER, batch_size=TRAIN_BATCH, train=True,
                       mean_image=mean_image, device=CPU, num_workers=2, seed=7)


def test_eval_loader_yields_every_test_image_once_in_order(betons, cifar10, mean_image):
    loader = make_loader(betons / "test.beton", augmentation=CIFAR_PAPER, batch_size=64, train=False,
                         mean_image=mean_image, device=CPU, num_workers=2)
    batches = list(loader)
    assert loader.num_images == TEST_IMAGES
    assert len(loader) == len(batches) == 4  # 200 = 3 * 64 + 8: the last, partial batch is kept
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    expected = normalize(torch.from_numpy(cifar10.test_images[:TEST_IMAGES]).permute(0, 3, 1, 2), mean_image)
    assert images.dtype == torch.float32 and torch.equal(images, expected)
    assert labels.dtype == torch.int64 and torch.equal(labels, torch.from_numpy(cifar10.test_labels[:TEST_IMAGES]))


def augmentations_matching(output: np.ndarray, source: np.ndarray) -> list[tuple[bool, int, int]]:
    """Every (flipped, dy, dx) for which `output` is `source`, optionally flipped, shifted by
    (dy, dx) with zero fill."""
    matches = []
    for flipped, image in ((False, source), (True, source[:, ::-1])):
        padded = np.pad(image, ((CROP_PADDING, CROP_PADDING), (CROP_PADDING, CROP_PADDING), (0, 0)))
        crops = sliding_window_view(padded, image.shape)[:, :, 0]  # (9, 9, 32, 32, 3)
        for y, x in np.argwhere((crops == output).all(axis=(2, 3, 4))):
            matches.append((flipped, CROP_PADDING - int(y), CROP_PADDING - int(x)))
    return matches


def test_training_batches_are_shifted_and_flipped_originals(train_loader, cifar10, mean_image):
    assert len(train_loader) == TRAIN_IMAGES // TRAIN_BATCH
    flips, shifts, sources = [], set(), []
    for images, labels in train_loader:
        assert images.shape == (TRAIN_BATCH, 3, 32, 32) and images.dtype == torch.float32
        assert labels.shape == (TRAIN_BATCH,) and labels.dtype == torch.int64
        unnormalized = (images * PIXEL_SCALE + mean_image).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for output, source in zip(unnormalized, labels.tolist()):
            matches = augmentations_matching(output, cifar10.train_images[source])
            assert matches, f"training output of image {source} is not a shifted or flipped copy of it"
            flipped, dy, dx = matches[0]
            flips.append(flipped)
            shifts.add((dy, dx))
            sources.append(source)
    assert sorted(sources) == list(range(TRAIN_IMAGES))
    assert 0.4 < np.mean(flips) < 0.6
    assert len(shifts) > 70  # of the 81 possible (dy, dx)


def test_epoch_order_depends_only_on_seed_and_epoch(train_loader):
    def order_of_epoch(epoch: int) -> torch.Tensor:
        train_loader.set_epoch(epoch)
        return torch.cat([labels for _, labels in train_loader])

    first, second = order_of_epoch(0), order_of_epoch(1)
    assert not torch.equal(first, second)
    assert torch.equal(order_of_epoch(1), second) and torch.equal(order_of_epoch(0), first)


def test_torch_thread_count_survives_ffcv(train_loader, betons, mean_image):
    original = torch.get_num_threads()
    wanted = 3  # neither of the worker counts below, which FFCV would set
    torch.set_num_threads(wanted)
    try:
        make_loader(betons / "test.beton", augmentation=CIFAR_PAPER, batch_size=10, train=False,
                    mean_image=mean_image, device=CPU, num_workers=1)
        assert torch.get_num_threads() == wanted
        for _ in train_loader:
            assert torch.get_num_threads() == wanted
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(original)


def test_loader_refuses_a_missing_file_naming_it(betons, mean_image):
    with pytest.raises(DataError, match=f"^{re.escape(str(betons / 'nothing.beton'))}: .beton file does not exist"):
        make_loader(betons / "nothing.beton", augmentation=CIFAR_PAPER, batch_size=10, train=True,
                    mean_image=mean_image, device=CPU, num_workers=2)


def test_a_training_epoch_can_start_at_any_batch_of_its_order(train_loader):
    train_loader.set_epoch(3)
    whole = [labels for _, labels in train_loader]
    train_loader.set_epoch(3, first_batch=7)  # a training resumed at batch 7 of epoch 3
    assert [labels.tolist() for _, labels in train_loader] == [labels.tolist() for labels in whole[7:]]
    train_loader.set_epoch(3)  # and a later one at its beginning again
    assert [labels.tolist() for _, labels in train_loader] == [labels.tolist() for labels in whole]


def test_both_backends_are_loaders(train_loader, cifar10, mean_image):
    portable = TorchLoader(ArrayImages(cifar10.test_images[:10], cifar10.test_labels[:10], CIFAR_PAPER, train=False),
                           batch_size=4, train=False, mean_image=mean_image, device=CPU, num_workers=0)
    for loader in (train_loader, portable):
        assert isinstance(loader, Loader)
    assert len(portable) == 3 and portable.num_images == 10  # evaluation keeps the last partial batch


def test_write_beton_refuses_bad_arrays_before_writing(tmp_path):
    with pytest.raises(DataError, match="bad.beton: images must be a uint8 array"):
        write_beton(tmp_path / "bad.beton", np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, np.int64))
    assert os.listdir(tmp_path) == []


KILLED_WRITE = """
import os, signal, sys
import numpy as np
from ffcv.writer import DatasetWriter
from resnet_repro.data.ffcv_io import write_beton

# Die as under `kill -9`: after the samples are written, before the file is finished.
DatasetWriter.finalize = lambda self, allocations: os.kill(os.getpid(), signal.SIGKILL)
write_beton(sys.argv[1], np.zeros((10, 32, 32, 3), np.uint8), np.zeros(10, np.int64))
"""


def test_killed_write_leaves_no_beton(tmp_path):
    target = tmp_path / "train.beton"
    result = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert list(tmp_path.glob(".train.beton.tmp*"))  # the write was under way ...
    assert not target.exists()  # ... but nothing claims to be finished
