"""Configuration: YAML files in configs/ read into typed dataclasses, unknown keys refused."""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsense.errors import WsenseError

DATA_DIR_ENV = "WSENSE_DATA_DIR"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
TARGETS = ("expert", "crowd", "blend")
MODES = ("frozen", "partial", "full")
TEXT_RUNTIMES = ("onnx", "onnx_int8", "torch")
IMAGE_RUNTIMES = ("openvino_bf16", "openvino", "onnx", "torch")
INDEX_DTYPES = ("float32", "float16", "int10")  # how an index store may keep its embeddings (wsense.serving.store)
EMBEDDING_DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class DataConfig:
    dir: str = "../shared/data/with_sense"
    target: str = "expert"
    expert_weight: float = 0.5
    # The test queries in Russian (written for this project, see data_ru/README.md), for the Russian report rows.
    russian_queries: str | None = "data_ru/test_queries_ru.csv"
    # Russian versions of the training captions: extra pairs for fitting the multilingual map (see data_ru/).
    russian_train_captions: str | None = "data_ru/train_captions_ru.csv"


@dataclass
class BackboneConfig:
    """One image backbone: a timm architecture, its weights and the side of its square views."""

    name: str = "efficientnet_lite0"
    pretrained: bool = True
    weights_file: str | None = None
    image_size: int = 224


@dataclass
class ImageBackboneConfig:
    """The image tower: the first backbone's settings, the views every backbone sees, and the backbones whose
    pooled features are appended to the first one's (each at its own image_size)."""

    name: str = "efficientnet_lite0"
    pretrained: bool = True
    weights_file: str | None = None
    image_size: int = 224
    # Views of a photo whose pooled features are averaged (frozen features and every embedding at inference):
    # center (ImageNet eval crop), flip (its mirror), full (the whole photo squeezed square), first / last (the
    # square ends of the longer side: left / right, or top / bottom). See wsense.models.views.VIEWS.
    views: list[str] = field(default_factory=lambda: ["center", "flip", "full", "first", "last"])
    extra_backbones: list[BackboneConfig] = field(
        default_factory=lambda: [BackboneConfig("efficientnet_lite2", image_size=260)])

    def __post_init__(self):
        # A config saved as plain values (a checkpoint's, the image check's) holds the extra backbones as mappings.
        self.extra_backbones = [BackboneConfig(**b) if isinstance(b, dict) else b for b in self.extra_backbones or []]

    def backbones(self) -> list[BackboneConfig]:
        """Every backbone of the tower, the first one first."""
        return [BackboneConfig(self.name, self.pretrained, self.weights_file, self.image_size), *self.extra_backbones]

    def first_only(self) -> "ImageBackboneConfig":
        """The tower of the first backbone alone (what the image check reads)."""
        return dataclasses.replace(self, views=list(self.views), extra_backbones=[])


@dataclass
class TextModelConfig:
    name: str = "all-MiniLM-L6-v2"
    path: str | None = None
    pretrained: bool = True
    max_length: int = 128


@dataclass
class EmbeddingConfig:
    image_batch_size: int = 32
    text_batch_size: int = 128
    # The image backbone wherever photos are embedded on CPU (index, evaluation; frozen features at float32):
    # IMAGE_RUNTIMES.
    image_runtime: str = "openvino_bf16"
    commit_every: int = 256  # photos an indexing run embeds between two commits of its progress
    index_dtype: str = "float32"  # how a new index store keeps the embeddings: INDEX_DTYPES
    # Where an index embeds its photos: auto (a CUDA GPU when there is one, else the CPU) | cpu | cuda. On a GPU:
    device: str = "auto"
    gpu_precision: str = "fp16"  # the backbone under autocast: fp16 | bf16 | fp32
    gpu_decode: bool = True  # JPEGs decoded on the GPU (nvJPEG) and cut into views there; other files on the CPU
    gpu_batch_size: int = 256  # photos per backbone batch on a GPU
    loader_workers: int = 8  # processes reading photo files (and decoding the non-JPEGs) for the GPU


@dataclass
class BaselinesConfig:
    folds: int = 5
    seed: int = 42
    models: list[str] = field(
        default_factory=lambda: ["dummy", "ridge", "random_forest", "hist_gradient_boosting", "mlp"]
    )
    feature_sets: list[str] = field(default_factory=lambda: ["concat", "concat_bridge"])


@dataclass
class ModelConfig:
    """The relevance model's heads; the towers are image_backbone and text_model."""

    embed_dim: int = 384
    fusion_hidden: int = 256
    dropout: float = 0.3
    # Dropout on the pooled image features before their projection: with a few hundred training photos the
    # projection otherwise memorises them within a few epochs.
    feature_dropout: float = 0.5
    # Add the label-bridge vector (ImageNet label probabilities -> text space) to the image embedding.
    label_bridge: bool = True
    # A second fusion output for the crowd-only pairs (target: crowd share), so that their differently
    # distributed target trains the shared layers without bending the expert score that search ranks by.
    crowd_head: bool = True


@dataclass
class TrainingConfig:
    mode: str = "frozen"  # frozen | partial | full
    epochs: int = 16
    batch_size: int = 256  # judged pairs per step
    contrastive_batch_size: int = 256  # positive (caption, image) pairs per step
    lr: float = 5e-4  # heads
    tower_lr: float = 2e-5  # towers in partial and full modes
    weight_decay: float = 0.05
    warmup_steps: int = 20
    gradient_accumulation_steps: int = 1
    regression_weight: float = 1.0
    crowd_weight: float = 0.0625  # weight of crowd-only pairs (target: crowd share) in the regression loss
    contrastive_weight: float = 0.1
    crowd_positive_threshold: float = 0.66  # crowd share from which a pair counts as a positive
    top_image_blocks: int = 2  # partial mode: trainable top stages of the image backbone
    top_text_layers: int = 2  # partial mode: trainable top transformer layers of the text tower
    augment: bool = True  # random crop and flip on image tensors (partial and full modes)
    val_fold: int | None = 0  # the grouped fold held out for validation and the best checkpoint
    seed: int = 42
    output_dir: str = "runs/default"
    mixed_precision: str = "auto"  # auto (bf16 on GPU, none on CPU) | no | bf16 | fp16
    tracker: str | None = None  # any tracker Accelerate supports, e.g. tensorboard


@dataclass
class SearchConfig:
    checkpoint: str = "runs/final/best"
    candidates: int = 100  # first-stage shortlist re-ranked by the fusion head (ranking: fusion)
    first_stage: str = "auto"  # auto (exact below faiss_threshold images, FAISS above) | exact | faiss | milvus |
    # compressed (IVF-PQ files beside the index store, re-scored from it; wsense.serving.compressed)
    faiss_threshold: int = 50_000
    faiss_nprobe: int = 64
    milvus_uri: str | None = None  # first_stage milvus: a Milvus Lite file or a server's URI (default: in cache_dir)
    milvus_collection: str | None = None  # default: one per index folder
    # How results are ordered: qb_cosine (the projections' cosine minus bank_weight x each photo's query-bank
    # offset, against hubs) | cosine | fusion (the fusion head re-ranks `candidates`). The score shown is this
    # ranking's score, calibrated on held-out expert pairs (wsense.models.calibration).
    ranking: str = "qb_cosine"
    bank_beta: float = 20.0  # > 0: inverse temperature of the query-bank offset
    bank_weight: float = 0.25  # >= 0: how much of the offset is subtracted
    # Queries in Cyrillic: use_map = multilingual USE v3 mapped into the trained text space (fitted on the
    # English training captions with the trained text tower as teacher); none = the English tower for all.
    multilingual: str = "use_map"
    multilingual_alpha: float = 0.1  # the map's kernel ridge: regularisation
    multilingual_gamma: float = 1.0  # and RBF width, exp(-gamma |x - y|^2) on unit USE vectors
    multilingual_gloss: float = 0.5  # share of the query's word-by-word English gloss, in [0, 1] (0: the map alone)
    # The query text tower on CPU: onnx_int8 (MiniLM in ONNX Runtime with int8 weights) | onnx (the same fp32
    # model) | torch. Exported once beside the checkpoint.
    text_runtime: str = "onnx_int8"
    # torch threads while a query runs (the fusion re-rank; the text tower under text_runtime: torch), from 1.
    query_threads: int = 2
    query_cache: int = 4096  # query texts whose embeddings are kept (0: none)
    duplicate_threshold: float | None = 0.9  # (0, 1]: photo cosine from which results fold together; None: off


@dataclass
class SafetyConfig:
    # The image-side legal check (wsense.safety.child_classifier), run on every catalog photo.
    check: str = "runs/child_check"  # folder of the fitted check; fitted on first use from the data set
    # Photos with people but no face the age model can read: strict (a lower classifier threshold of their own) |
    # exclude (all kept out) | classifier (the same threshold as other photos).
    uncertain: str = "strict"
    child_age: int = 16  # a readable face estimated younger than this keeps its photo out
    target_recall: float = 0.95  # (0, 1]: share of the training child photos the fitted threshold keeps out
    classifier_c: float = 0.003  # > 0: inverse regularisation of the check's logistic regression
    labels: str = "labels/photos.csv"  # what each data set photo shows, by looking: fits the check (labels/README.md)
    # Verdicts people made by looking at catalog photos (`wsense review`), overruling the check; null: none.
    reviews: str | None = "reviews.csv"


UNCERTAIN_POLICIES = ("strict", "exclude", "classifier")
RANKINGS = ("qb_cosine", "cosine", "fusion")


# What a checkpoint records: the sections that rebuild its model (and so change its embeddings), and the
# training settings it was made with. Everything else (search, embedding, paths) is a runtime setting, taken
# from the config the user passes when searching, serving or evaluating.
MODEL_SECTIONS = ("image_backbone", "text_model", "model")
CHECKPOINT_SECTIONS = ("data", *MODEL_SECTIONS, "baselines", "training")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    cache_dir: str = ".cache/wsense"
    reports_dir: str = "reports"
    image_backbone: ImageBackboneConfig = field(default_factory=ImageBackboneConfig)
    text_model: TextModelConfig = field(default_factory=TextModelConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir).expanduser()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_sections(self, other: "Config", sections: tuple[str, ...]) -> "Config":
        """A copy of this config with `sections` taken from `other` (e.g. a checkpoint's model and training)."""
        merged = copy.deepcopy(self)
        for name in sections:
            setattr(merged, name, copy.deepcopy(getattr(other, name)))
        return merged


def _build(cls, values: dict[str, Any], where: str, source: Path):
    if not isinstance(values, dict):
        raise WsenseError(f"{source}: '{where or 'top level'}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise WsenseError(f"{source}: unknown key '{where + '.' if where else ''}{key}' "
                              f"(known: {', '.join(fields)})")
        default = getattr(cls(), key)
        name = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value or {}, name, source)
        elif isinstance(default, list) and default and dataclasses.is_dataclass(default[0]):
            if value is not None and not isinstance(value, list):
                raise WsenseError(f"{source}: '{name}' must be a list of mappings, got {type(value).__name__}")
            kwargs[key] = [_build(type(default[0]), item, f"{name}[{i}]", source) for i, item in enumerate(value or [])]
        else:
            kwargs[key] = value
    return cls(**kwargs)


def load_config(path: str | Path | None = None) -> Config:
    """Read a YAML config; keys it leaves out keep their defaults."""
    source = Path(path) if path else DEFAULT_CONFIG
    if not source.is_file():
        raise WsenseError(f"{source}: config file not found")
    try:
        values = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise WsenseError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return config_from_dict(values, source)


def config_from_dict(values: dict[str, Any], source: str | Path = "config") -> Config:
    """A Config from plain values (a YAML file's, or the copy saved in a checkpoint), validated."""
    config = _build(Config, values, "", source)
    # The environment wins over files; a command line's --data-dir, set afterwards, wins over both.
    if os.environ.get(DATA_DIR_ENV):
        config.data.dir = os.environ[DATA_DIR_ENV]
    if config.data.target not in TARGETS:
        raise WsenseError(f"{source}: data.target must be one of {', '.join(TARGETS)}, got '{config.data.target}'")
    if config.search.multilingual not in ("use_map", "none"):
        raise WsenseError(f"{source}: search.multilingual must be use_map or none, got '{config.search.multilingual}'")
    gloss = config.search.multilingual_gloss
    if isinstance(gloss, bool) or not isinstance(gloss, (int, float)) or not 0 <= gloss <= 1:
        raise WsenseError(f"{source}: search.multilingual_gloss must be a number from 0 to 1, got {gloss!r}")
    if config.search.text_runtime not in TEXT_RUNTIMES:
        raise WsenseError(f"{source}: search.text_runtime must be one of {', '.join(TEXT_RUNTIMES)}, got "
                          f"'{config.search.text_runtime}'")
    embedding = config.embedding
    for key, least in (("commit_every", 1), ("gpu_batch_size", 1), ("loader_workers", 0)):
        value = getattr(embedding, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise WsenseError(f"{source}: embedding.{key} must be a whole number from {least}, got {value!r}")
    if embedding.device not in EMBEDDING_DEVICES or embedding.gpu_precision not in PRECISIONS:
        raise WsenseError(f"{source}: embedding.device must be one of {', '.join(EMBEDDING_DEVICES)} and "
                          f"embedding.gpu_precision one of {', '.join(PRECISIONS)}, got '{embedding.device}' and "
                          f"'{embedding.gpu_precision}'")
    if config.embedding.index_dtype not in INDEX_DTYPES:
        raise WsenseError(f"{source}: embedding.index_dtype must be one of {', '.join(INDEX_DTYPES)}, got "
                          f"'{config.embedding.index_dtype}'")
    if config.embedding.image_runtime not in IMAGE_RUNTIMES:
        raise WsenseError(f"{source}: embedding.image_runtime must be one of {', '.join(IMAGE_RUNTIMES)}, got "
                          f"'{config.embedding.image_runtime}'")
    threshold = config.search.duplicate_threshold
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 < threshold <= 1):
        raise WsenseError(f"{source}: search.duplicate_threshold must be a number in (0, 1] or null, got {threshold!r}")
    if not isinstance(config.search.query_cache, int) or config.search.query_cache < 0:
        raise WsenseError(f"{source}: search.query_cache must be a whole number from 0, got "
                          f"{config.search.query_cache!r}")
    if not isinstance(config.search.query_threads, int) or config.search.query_threads < 1:
        raise WsenseError(f"{source}: search.query_threads must be a whole number from 1, got "
                          f"{config.search.query_threads!r}")
    if config.training.mode not in MODES:
        raise WsenseError(f"{source}: training.mode must be one of {', '.join(MODES)}, got '{config.training.mode}'")
    if not 0.0 <= float(config.data.expert_weight) <= 1.0:
        raise WsenseError(f"{source}: data.expert_weight must be in [0, 1], got {config.data.expert_weight}")
    if config.search.ranking not in RANKINGS:
        raise WsenseError(f"{source}: search.ranking must be one of {', '.join(RANKINGS)}, got "
                          f"'{config.search.ranking}'")
    if not float(config.search.bank_beta) > 0 or not float(config.search.bank_weight) >= 0:
        raise WsenseError(f"{source}: search.bank_beta must be above 0 and search.bank_weight 0 or more, got "
                          f"{config.search.bank_beta} and {config.search.bank_weight}")
    safety = config.safety
    if safety.uncertain not in UNCERTAIN_POLICIES:
        raise WsenseError(f"{source}: safety.uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}, got "
                          f"'{safety.uncertain}'")
    if not isinstance(safety.child_age, int) or not 1 <= safety.child_age <= 80:
        raise WsenseError(f"{source}: safety.child_age must be a whole number of years from 1 to 80, got "
                          f"{safety.child_age!r}")
    if safety.reviews is not None and (not isinstance(safety.reviews, str) or not safety.reviews.strip()):
        raise WsenseError(f"{source}: safety.reviews must be a file path or null, got {safety.reviews!r}")
    if not 0.0 < float(safety.target_recall) <= 1.0 or not float(safety.classifier_c) > 0:
        raise WsenseError(f"{source}: safety.target_recall must be in (0, 1] and safety.classifier_c above 0, got "
                          f"{safety.target_recall} and {safety.classifier_c}")
    return config
