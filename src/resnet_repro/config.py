"""The typed schema of params.yaml: the one place that reads it.

params.yaml is the whole truth: every key a stage uses is written there (so that `dvc exp run -S`,
`dvc params diff` and `dvc exp show` see it), and this schema has no defaults of its own: a missing
key is an error. The paper's recipes are written into the file by `resnet-repro recipe select` or
`resnet-repro study select` (train/recipe.py, studies.py), never filled in at run time.

Every stage calls `load_params()` before any work starts. A bad file stops the stage with a single
`ConfigError` line that names the key path and the offending value, e.g.
``params.yaml: train.lr = -0.1: must be > 0``.
"""

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(gt=0, lt=1)]

# Sizes of the datasets the pipeline knows, to refuse an impossible split before any work.
TRAIN_SET_SIZE = {"cifar10": 50_000}


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names the key path and value."""


class Section(BaseModel):
    # A misspelt key must be an error, not a silently ignored knob.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    # cifar10: the CIFAR-10 python archive. imagefolder: `root` holds train/<class>/* and val/<class>/*.
    dataset: Literal["cifar10", "imagefolder"]
    archive: str | None
    root: str | None
    subset: PositiveInt | None
    val_size: NonNegativeInt
    split_seed: NonNegativeInt
    # Image folders: the prepare stage fails when more than this fraction of the files is unreadable.
    max_bad_fraction: Annotated[float, Field(ge=0, le=1)]
    # Image folders in FFCV: longest side capped at max_resolution, each image stored as JPEG with this
    # probability (else raw pixels), at this quality.
    max_resolution: PositiveInt
    jpeg_quality: Annotated[int, Field(ge=1, le=100)]
    compress_probability: Annotated[float, Field(ge=0, le=1)]

    @model_validator(mode="after")
    def _source_given(self) -> "DataParams":
        needed = {"cifar10": "archive", "imagefolder": "root"}[self.dataset]
        if getattr(self, needed) is None:
            raise ValueError(f"data.{needed} is required when data.dataset is {self.dataset!r}")
        return self

    @model_validator(mode="after")
    def _split_fits(self) -> "DataParams":
        if self.dataset == "imagefolder":
            # The folder's own val/ is the held-out split; its size is known only once prepare walks it.
            if self.val_size:
                raise ValueError(f"data.val_size = {self.val_size}: an image folder brings its own val/ "
                                 "split, so data.val_size must be 0")
            return self
        available = TRAIN_SET_SIZE[self.dataset]
        if self.val_size >= available:
            raise ValueError(f"data.val_size = {self.val_size}: must be < the {available} training images")
        if self.subset is not None and self.subset + self.val_size > available:
            raise ValueError(
                f"data.subset = {self.subset}: with data.val_size = {self.val_size} this needs "
                f"{self.subset + self.val_size} images, but {self.dataset} has {available}"
            )
        return self


class LoaderParams(Section):
    # ffcv: the fast default. torch: a PyTorch DataLoader with albumentations, where FFCV cannot be built.
    backend: Literal["ffcv", "torch"]
    num_workers: PositiveInt


class AugmentParams(Section):
    """Training augmentation and evaluation views; both loader backends give each key the same meaning."""

    # CIFAR (the paper): zero-pad by crop_padding pixels, random crop back to 32x32.
    crop_padding: NonNegativeInt
    flip: bool
    # Image folders (the paper's scale augmentation): shorter side resized to a random size in
    # scale_range, then a random crop_size square.
    scale_range: tuple[PositiveInt, PositiveInt]
    crop_size: PositiveInt
    # fb.resnet.torch colour jitter: brightness, contrast and saturation each by 1 + U(-j, j); 0 is off.
    color_jitter: Annotated[float, Field(ge=0, lt=1)]
    # AlexNet PCA lighting noise, alpha ~ N(0, lighting_std) per component (the paper: 0.1); 0 is off.
    # Eigen-decomposition from the training set's stats.json, or fb.resnet.torch's ImageNet constants.
    lighting_std: Annotated[float, Field(ge=0)]
    lighting_eigen: Literal["dataset", "imagenet"]
    # Evaluation on image folders: shorter side resized to eval_resize, centre or 10 crops of crop_size;
    # multi-scale testing averages the fully-convolutional scores over these shorter sides.
    eval_resize: PositiveInt
    test_scales: Annotated[list[PositiveInt], Field(min_length=1)]

    @model_validator(mode="after")
    def _sizes_consistent(self) -> "AugmentParams":
        low, high = self.scale_range
        if not self.crop_size <= low <= high:
            raise ValueError(f"augment.scale_range = {list(self.scale_range)}: need crop_size "
                             f"({self.crop_size}) <= low <= high")
        if self.eval_resize < self.crop_size:
            raise ValueError(f"augment.eval_resize = {self.eval_resize}: must be >= crop_size ({self.crop_size})")
        return self


class TrainParams(Section):
    """Training: the recipe (the paper's, as `resnet-repro recipe select` writes it) and the speed paths."""

    iterations: PositiveInt
    batch_size: PositiveInt
    lr: Annotated[float, Field(gt=0)]
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: Annotated[float, Field(ge=0)]
    # steps: divide by 1/lr_decay at each milestone. plateau: also whenever the validation error (every
    # eval_every) has not improved by plateau_threshold for plateau_patience measurements. cosine (not the
    # paper's): from lr down to 0 along half a cosine over the iterations, no milestones.
    schedule: Literal["steps", "plateau", "cosine"]
    milestones: list[PositiveInt]
    lr_decay: Probability
    warmup_min_depth: PositiveInt
    warmup_max_iterations: NonNegativeInt
    eval_every: NonNegativeInt
    plateau_patience: PositiveInt
    plateau_threshold: Annotated[float, Field(ge=0, lt=1)]
    warmup_lr: Annotated[float, Field(gt=0)]
    warmup_until_error: Probability
    # Not the paper's: the lr of every net rises linearly from lr / n to lr over the first n iterations
    # (Goyal et al. 2017's gradual warm-up); 0 for none.
    linear_warmup_iterations: NonNegativeInt
    precision: Literal["auto", "bf16", "fp16", "fp32"]
    device: str
    # Data-parallel processes (DDP through torchrun): GPUs of this node, or CPU processes. The global
    # batch stays batch_size, split evenly between them, so the recipe needs no scaling.
    nproc: PositiveInt
    checkpoint_every: PositiveInt
    checkpoint_seconds: Annotated[float, Field(gt=0)]
    log_every: PositiveInt
    # Bit-identical results for identical inputs (torch.use_deterministic_algorithms, cuDNN
    # deterministic, no autotuning): a resumed run then ends exactly as an uninterrupted one would.
    deterministic: bool
    # Speed paths: NHWC activations, torch.compile ("auto": on CUDA only), cuDNN autotuning.
    channels_last: bool
    compile: Literal["auto", True, False]
    cudnn_benchmark: bool
    # true: no weight decay on BN scales/shifts and biases (a common modern choice); the paper decays all.
    no_weight_decay_on_bn_and_bias: bool

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if milestones != sorted(set(milestones)):
            raise ValueError(f"{milestones} must be strictly increasing")
        return milestones

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device != "auto" and device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"{device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return device

    @model_validator(mode="after")
    def _batch_splits_evenly(self) -> "TrainParams":
        if self.batch_size % self.nproc:
            raise ValueError(f"train.batch_size = {self.batch_size} does not split evenly between "
                             f"train.nproc = {self.nproc} processes")
        return self

    @model_validator(mode="after")
    def _schedule_fits_the_run(self) -> "TrainParams":
        beyond = [milestone for milestone in self.milestones if milestone >= self.iterations]
        if beyond:
            raise ValueError(f"train.milestones = {self.milestones}: {beyond} not below train.iterations = "
                             f"{self.iterations} (the lr would never drop there)")
        if self.linear_warmup_iterations > self.iterations:
            raise ValueError(f"train.linear_warmup_iterations = {self.linear_warmup_iterations}: longer than "
                             f"train.iterations = {self.iterations}")
        return self

    @model_validator(mode="after")
    def _cosine_has_no_milestones(self) -> "TrainParams":
        if self.schedule == "cosine" and self.milestones:
            raise ValueError(f"train.milestones = {self.milestones}: the cosine schedule lowers the lr every "
                             "iteration and has no milestones; set train.milestones to []")
        return self

    @model_validator(mode="after")
    def _plateau_is_measured(self) -> "TrainParams":
        if self.schedule == "plateau" and not self.eval_every:
            raise ValueError("train.eval_every = 0: the plateau schedule needs the validation error measured "
                             "every eval_every iterations")
        return self


class EvaluateParams(Section):
    batch_size: PositiveInt
    # center: each image once (CIFAR: the 32x32 image; image folders: the centre crop). Image folders
    # may add the paper's ImageNet testing: ten_crop (corners, centre and their flips, softmax averaged)
    # and multi_scale (the whole image at each of augment.test_scales, scores averaged).
    views: Annotated[list[Literal["center", "ten_crop", "multi_scale"]], Field(min_length=1)]

    @field_validator("views")
    @classmethod
    def _center_first(cls, views: list[str]) -> list[str]:
        if views[0] != "center" or len(set(views)) != len(views):
            raise ValueError(f"evaluate.views = {views}: must start with center and name each view once "
                             f"(center is the error the curves and the registry use)")
        return views


class QuotedSpread(Section):
    """Each net's std of test error over seeds, quoted from someone else's runs of the same recipe and
    length, not measured here: a study with a single seed at that length and no measured spread judges
    its test-error claims against the spread derived from it (report/claims.py)."""
    source: str | None  # whose runs: named beside every verdict that uses them
    iterations: PositiveInt | None  # the length of those runs (on the whole training set)
    test_error_std: dict[str, Annotated[float, Field(ge=0)]]  # variant -> std, in points of test error

    @model_validator(mode="after")
    def _sourced(self) -> "QuotedSpread":
        if self.test_error_std and (self.source is None or self.iterations is None):
            raise ValueError("study.seed_spread.quoted: test_error_std needs its source and iterations")
        from resnet_repro.models import spec

        for variant in self.test_error_std:
            spec(variant)  # raises ValueError listing the valid names
        return self


class SeedSpread(Section):
    """How far each claim's margin moved between seeds, measured once at one scale (report/claims.py):
    a study with a single seed judges its claims against it when it runs at that scale. `quoted` is the
    fallback where nothing was measured."""
    iterations: PositiveInt | None  # the scale it was measured at; null: not measured
    subset: PositiveInt | None
    seeds: PositiveInt | None  # how many seeds
    margins: dict[Literal["C1", "C2", "C3", "C4", "C5"], Annotated[float, Field(ge=0)]]
    quoted: QuotedSpread


class StudyParams(Section):
    name: str
    variants: Annotated[list[str], Field(min_length=1)]
    seeds: Annotated[list[NonNegativeInt], Field(min_length=1)]
    seed_spread: SeedSpread

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, variants: list[str]) -> list[str]:
        from resnet_repro.models import spec

        for variant in variants:
            spec(variant)  # raises ValueError listing the valid names
        if len(set(variants)) != len(variants):
            raise ValueError(f"{variants} lists a variant twice")
        return variants

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{seeds} lists a seed twice")
        return seeds


class MlflowParams(Section):
    tracking_uri: str | None
    experiment: str


class Params(Section):
    data: DataParams
    loader: LoaderParams
    augment: AugmentParams
    train: TrainParams
    evaluate: EvaluateParams
    study: StudyParams
    mlflow: MlflowParams

    @model_validator(mode="after")
    def _nets_fit_dataset(self) -> "Params":
        """A net's stem is made for one image size: ImageNet's 7x7 stride-2 conv and max-pool leave a
        32x32 image 8x8 before the first stage and 1x1 in the last; a CIFAR net's 3x3 stride-1 stem
        passes a 224-pixel crop whole to its first stage (16 times the positions in every stage). The
        wrong one is refused before any stage starts, naming the net made for this dataset."""
        from resnet_repro.models import counterpart, spec

        for variant in self.study.variants:
            made_for = spec(variant).dataset
            if (self.data.dataset == "cifar10") == (made_for == "cifar10"):
                continue
            other = counterpart(variant)
            if self.data.dataset == "cifar10":
                raise ValueError(f"study.variants: {variant} is an ImageNet net (7x7 stride-2 stem and max-pool, "
                                 f"for 224-pixel images); on CIFAR-10 use {other}, the same net with a 3x3 stem")
            instead = (f"; on an image folder use {other}, the same net with ImageNet's stem" if other else
                       " with no ImageNet version; an image folder trains the ImageNet nets: resnet18, resnet34, "
                       "resnet50, resnet101, resnet152, plain18, plain34, ... (resnet-repro models)")
            raise ValueError(f"study.variants: {variant} is a CIFAR-10 net (3x3 stem, for 32-pixel images){instead}")
        return self

    @model_validator(mode="after")
    def _views_fit_dataset(self) -> "Params":
        if self.data.dataset == "cifar10" and self.evaluate.views != ["center"]:
            raise ValueError(f"evaluate.views = {self.evaluate.views}: ten_crop and multi_scale are for image "
                             f"folders; CIFAR-10 is evaluated on the single 32x32 image (the paper)")
        return self


def _describe(error: ErrorDetails, raw: dict) -> str:
    """One line for one pydantic error: the dotted key path, the value found, and what is wrong."""
    path = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    if error["type"] == "value_error" and message.split(" ", 1)[0].split(".", 1)[0] in Params.model_fields:
        return message  # our validators name the key path and value themselves
    value: Any = raw
    for part in error["loc"]:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return f"{path}: {message}"
    return f"{path} = {value!r}: {message}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_describe(e, raw) for e in error.errors())
        raise ConfigError(f"{source}: {problems}") from None


def load_params(path: Path | str = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (run the stage from the project root)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_params(raw, source=str(path))


def update_params_file(path: Path | str, changes: dict[str, Any]) -> Params:
    """Set dotted keys ({"train.lr": 0.05}) in the params file at `path`, keeping its comments and order.

    The result is validated before the file is replaced (atomically), so a bad change leaves it as it was.
    """
    import io

    from ruamel.yaml import YAML  # DVC's own YAML library: a round trip keeps comments
    from ruamel.yaml.comments import CommentedSeq

    from resnet_repro.io import atomic_write

    path = Path(path)
    text = path.read_text() if path.exists() else None
    if text is None:
        raise ConfigError(f"{path}: no such file (run from the project root, or pass the file)")
    try:  # a file that is not YAML stays as it is: a round trip would keep only what it understood
        yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML, left unchanged: {error}") from None
    round_trip = YAML()
    round_trip.width = 120
    # Keep the file's style: `null` spelled out, lists on one line.
    round_trip.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null"))
    document = round_trip.load(text)
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        mapping = document.setdefault(section, {})
        if isinstance(value, (list, tuple)) and isinstance(mapping.get(key), list):
            mapping[key][:] = list(value)  # in place: a comment or blank line after the list stays
        elif isinstance(value, (list, tuple)):
            mapping[key] = CommentedSeq(value)
            mapping[key].fa.set_flow_style()
        elif isinstance(value, dict) and isinstance(mapping.get(key), dict):
            mapping[key].update(value)  # in place, like a list: the comments around the mapping stay
        else:
            mapping[key] = value
    buffer = io.StringIO()
    round_trip.dump(document, buffer)
    text = buffer.getvalue()
    params = parse_params(yaml.safe_load(text), source=f"{path} after setting {', '.join(changes)}")
    atomic_write(path, lambda temporary: temporary.write_text(text))
    return params
