"""Image folders through prepare and ffcv, on photographs written here with Pillow in the forms real
collections hold them: JPEGs of varied sizes, grayscale, CMYK, palette PNG behind a .JPEG name,
EXIF-rotated, and broken files of every kind."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from projects import params_with
from resnet_repro.config import parse_params
from resnet_repro.data.errors import DataError
from resnet_repro.data.imagefolder import load_rgb, read_list, scan
from resnet_repro.data.loading import make_split_loader
from resnet_repro.data.stats import load_stats, mean_image_tensor
from resnet_repro.layout import Layout
from resnet_repro.stages.prepare import prepare, write_ffcv

CPU = torch.device("cpu")
CLASSES = ["n01440764", "n01443537", "n01484850"]  # WordNet ids, as in ImageNet


def photograph(seed: int, width: int, height: int) -> Image.Image:
    """A smooth colour scene with sensor noise: compresses and resizes like a photograph."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    phases, frequencies = rng.uniform(0, 2 * np.pi, 3), rng.uniform(2, 6, 3)
    channels = [127 + 100 * np.sin(f * (x + (c + 1) * y) + p) for c, (f, p) in enumerate(zip(frequencies, phases))]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def exif_rotated(image: Image.Image) -> bytes:
    """The image stored sideways with EXIF orientation 6 ("rotate 90 degrees clockwise to view")."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(image.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


def palette_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(buffer, format="PNG")
    return buffer.getvalue()


SIZES = [(320, 240), (240, 320), (500, 375), (280, 280), (400, 260)]
BROKEN = {  # file name in train/<first class>/ -> the reason the skip report must give
    "truncated.JPEG": "truncated or corrupt image",
    "empty.JPEG": "empty file",
    "notes.txt": "not an image file",
    "garbage.JPEG": "not an image file",
}


def write_collection(root: Path, per_class: int = 5, broken: bool = True) -> Path:
    """train/<wnid>/ and val/<wnid>/ with every awkward form a photo collection holds."""
    seed = 0
    for split, count in (("train", per_class), ("val", 2)):
        for label, wnid in enumerate(CLASSES):
            directory = root / split / wnid
            directory.mkdir(parents=True)
            for index in range(count):
                seed += 1
                image = photograph(seed, *SIZES[seed % len(SIZES)])
                form = seed % 5
                data = {0: lambda: jpeg_bytes(image), 1: lambda: jpeg_bytes(image.convert("L")),
                        2: lambda: jpeg_bytes(image.convert("CMYK")), 3: lambda: palette_png(image),
                        4: lambda: exif_rotated(image)}[form]()
                (directory / f"{wnid}_{index}.JPEG").write_bytes(data)
    if broken:
        first = root / "train" / CLASSES[0]
        whole = jpeg_bytes(photograph(99, 320, 240))
        (first / "truncated.JPEG").write_bytes(whole[:len(whole) // 2])
        (first / "empty.JPEG").write_bytes(b"")
        (first / "notes.txt").write_text("photographer's notes, not a photograph\n")
        (first / "garbage.JPEG").write_bytes(np.random.default_rng(0).bytes(5000))
    return root


# --- decoding one file -------------------------------------------------------------------------------

def test_every_readable_form_decodes_to_upright_rgb(tmp_path):
    image = photograph(1, 320, 240)
    colour, grey = np.asarray(image).astype(int), np.asarray(image.convert("L")).astype(int)[..., None]
    forms = {"plain.JPEG": (jpeg_bytes(image), colour), "grey.JPEG": (jpeg_bytes(image.convert("L")), grey),
             "cmyk.JPEG": (jpeg_bytes(image.convert("CMYK")), colour),
             "png-behind-jpeg.JPEG": (palette_png(image), colour), "rotated.JPEG": (exif_rotated(image), colour)}
    for name, (data, expected) in forms.items():
        (tmp_path / name).write_bytes(data)
        decoded = load_rgb(tmp_path / name)
        assert decoded.dtype == np.uint8 and decoded.shape == (240, 320, 3), name
        # Within JPEG and palette error of the original: orientation and colours are right.
        assert np.abs(decoded.astype(int) - expected).mean() < 12, name


@pytest.mark.parametrize("name, reason", BROKEN.items())
def test_unreadable_files_are_refused_with_the_file_and_reason(tmp_path, name, reason):
    write_collection(tmp_path / "photos", per_class=1)
    path = tmp_path / "photos" / "train" / CLASSES[0] / name
    with pytest.raises(DataError, match=f"{name}: {reason}"):
        load_rgb(path)


# --- the folder's layout -----------------------------------------------------------------------------

def test_layout_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="nowhere: image folder does not exist"):
        scan(tmp_path / "nowhere")
    root = write_collection(tmp_path / "photos", per_class=1, broken=False)
    (root / "val" / "n99999999").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) \['n99999999'\] do not exist in .*train"):
        scan(root)
    (root / "val" / "n99999999").rmdir()
    (root / "train" / "n00000000").mkdir()
    with pytest.raises(DataError, match="n00000000: class folder has no files"):
        scan(root)


def test_empty_folder_and_missing_split_are_refused(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    with pytest.raises(DataError, match="train: has no class folders"):
        scan(tmp_path / "empty")
    (tmp_path / "no-val" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no-val: has no val/ folder"):
        scan(tmp_path / "no-val")


def test_classes_are_indexed_in_sorted_order_and_strays_are_listed(tmp_path):
    root = write_collection(tmp_path / "photos", per_class=1, broken=False)
    (root / "train" / "stray.JPEG").write_bytes(b"")
    folder = scan(root)
    assert folder.class_names == sorted(CLASSES)
    assert [s.label for s in folder.samples["train"]] == [0, 1, 2]
    assert [(s.path.name, s.reason) for s in folder.strays] == [("stray.JPEG", "not inside a class folder")]


# --- prepare and ffcv --------------------------------------------------------------------------------

def project_params(tmp_path: Path, root: Path, **data) -> dict:
    return params_with({
        "data": {"dataset": "imagefolder", "root": str(root), "val_size": 0, "max_bad_fraction": 0.25,
                 "max_resolution": 256, **data},
        # Small crops keep the test fast; the geometry is the paper's scaled down.
        "augment": {"crop_size": 64, "scale_range": [72, 128], "eval_resize": 73, "lighting_std": 0.1,
                    "color_jitter": 0.4},
        "loader": {"num_workers": 2},
        "train": {"iterations": 10, "milestones": []},
        "study": {"variants": ["resnet18"]},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "test"},
    })


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A collection with every broken kind of file, through prepare and ffcv."""
    tmp_path = tmp_path_factory.mktemp("imagefolder")
    root = write_collection(tmp_path / "photos")
    params = parse_params(project_params(tmp_path, root))
    layout = Layout(tmp_path / "project", "imagefolder")
    meta = prepare(params, layout)
    write_ffcv(params, layout)
    return params, layout, meta


def test_prepare_lists_readable_images_and_reports_every_skip(prepared):
    params, layout, meta = prepared
    assert meta["class_names"] == sorted(CLASSES)
    assert meta["sizes"] == {"train": 15, "val": 6}
    report = json.loads((layout.prepared_dir / "skipped.json").read_text())
    assert report["count"] == len(BROKEN) and report["files"] == 15 + 6 + len(BROKEN)
    reasons = {Path(entry["path"]).name: entry["reason"] for entry in report["skipped"]}
    assert {name: reasons[name].split(" (")[0] for name in BROKEN} == BROKEN
    train = read_list(layout.prepared_dir, "train", Path(params.data.root))
    assert len(train) == 15 and not any(sample.path.name in BROKEN for sample in train)


def test_prepare_streams_statistics_at_the_stats_view(prepared):
    _, layout, _ = prepared
    stats = load_stats(layout.prepared_dir / "stats.json")
    assert stats["num_images"] == 15 and stats["mean_image"].shape == (224, 224, 3)
    assert np.allclose(stats["rgb_cov"], stats["rgb_cov"].T) and (stats["eigval"] > 0).all()
    assert 0.2 < stats["channel_mean"].mean() < 0.8


def test_skip_report_is_logged_to_mlflow(prepared):
    from mlflow import MlflowClient

    params, _, _ = prepared
    client = MlflowClient(params.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name("test")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["skipped_files"] == len(BROKEN)
    assert [artifact.path for artifact in client.list_artifacts(run.info.run_id)] == ["skipped.json"]


# FFCV compiles the jitter and lighting operations on first use (about a minute on two cores).
@pytest.mark.parametrize("backend", [pytest.param("ffcv", marks=pytest.mark.slow), "torch"])
def test_both_backends_load_the_prepared_folder(prepared, backend):
    params, layout, _ = prepared
    params = params.model_copy(update={"loader": params.loader.model_copy(update={"backend": backend})})
    mean_image = mean_image_tensor(load_stats(layout.prepared_dir / "stats.json"), size=64)
    train = make_split_loader(params, layout, "train", train=True, batch_size=4, mean_image=mean_image, device=CPU)
    batches = list(train)
    assert len(batches) == len(train) == 3  # 15 images, the last partial batch dropped
    assert all(images.shape == (4, 3, 64, 64) and images.dtype == torch.float32 for images, _ in batches)
    val = make_split_loader(params, layout, "val", train=False, batch_size=4, mean_image=mean_image, device=CPU)
    labels = torch.cat([labels for _, labels in val])
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_too_many_broken_files_fail_the_stage(tmp_path):
    root = write_collection(tmp_path / "photos", per_class=2)  # 4 broken of 6 + 6 + 4 files
    params = parse_params(project_params(tmp_path, root, max_bad_fraction=0.1))
    with pytest.raises(DataError, match=r"4 of 16 files \(25\.0%\) are unreadable, more than "
                                        r"data\.max_bad_fraction = 0\.1\. First ones: .*truncated\.JPEG"):
        prepare(params, Layout(tmp_path / "project", "imagefolder"))
    assert not (tmp_path / "project" / "data" / "prepared" / "imagefolder").exists()


def test_a_class_whose_files_are_all_broken_is_refused(tmp_path):
    root = write_collection(tmp_path / "photos", per_class=1, broken=False)
    (root / "train" / CLASSES[1] / f"{CLASSES[1]}_0.JPEG").write_bytes(b"")
    params = parse_params(project_params(tmp_path, root, max_bad_fraction=0.5))
    with pytest.raises(DataError, match=rf"\['{CLASSES[1]}'\] have no readable image"):
        prepare(params, Layout(tmp_path / "project", "imagefolder"))


def test_a_file_changed_after_prepare_stops_the_ffcv_stage(prepared):
    params, layout, _ = prepared
    victim = read_list(layout.prepared_dir, "val", Path(params.data.root))[0].path
    original, status = victim.read_bytes(), victim.stat()
    try:
        victim.write_bytes(original + b"\0")
        with pytest.raises(DataError, match=f"{victim.name}: missing or changed since the prepare stage"):
            write_ffcv(params, layout)
    finally:
        # The file as prepare read it, its time included (the list records size and mtime): the module's
        # other tests load the same prepared folder.
        victim.write_bytes(original)
        os.utime(victim, ns=(status.st_atime_ns, status.st_mtime_ns))


def test_params_refuse_a_val_size_for_folders_and_a_missing_root(tmp_path):
    from resnet_repro.config import ConfigError

    raw = project_params(tmp_path, tmp_path)
    raw["data"]["val_size"] = 5000
    with pytest.raises(ConfigError, match="data.val_size = 5000: an image folder brings its own val/"):
        parse_params(raw)
    raw["data"]["root"] = None
    raw["data"]["val_size"] = 0
    with pytest.raises(ConfigError, match="data.root is required when data.dataset is 'imagefolder'"):
        parse_params(yaml.safe_load(yaml.safe_dump(raw)))
