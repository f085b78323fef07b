"""Scoring with a trained relevance model outside training: image files and query texts in, scores out.

The scorer runs on a checkpoint's serving files (wsense.models.serving): the query text tower in ONNX Runtime, the
heads in numpy, so that searching a built index never imports torch. The torch model is loaded where a path needs
it, on first use: search.text_runtime torch, embedding new photos (indexing, and an upload while the serving files
name no image tower yet), the multilingual map's and the query bank's teacher, and making the serving files the first
time. Embeddings and scores are float32 numpy arrays throughout.
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Collection, Sequence

import numpy as np

from wsense.config import Config
from wsense.errors import WsenseError
from wsense.models.checkpoint import load_checkpoint, load_checkpoint_config, model_fingerprint
from wsense.models.multilingual import TextMap, is_cyrillic
from wsense.models.serving import (ServingModel, make_serving_model, onnx_text_embeddings, open_serving_model,
                                   record_image_towers)
from wsense.models.serving_head import ServingHead, head_arrays
from wsense.serving.query_bank import BANK_FILE, bank_offsets, bank_texts, load_bank, save_bank

if TYPE_CHECKING:
    # pandas (75 MB, 0.4 s to import) only where a table is read: a server over its index never needs it
    import pandas as pd

TEXT_MAP_FILE = "text_map.npz"


def _on_cpu(device) -> bool:
    return str(device).split(":")[0] == "cpu"


class RelevanceScorer:
    """A checkpoint's model at inference: photos through the one photo path (wsense.models.photos; an upload through
    its ONNX views, wsense.models.views), query texts through the text tower in the configured runtime (or, for
    Cyrillic, the multilingual map), and the fusion head's relevance (wsense.models.serving_head)."""

    def __init__(self, model, config: Config, device="cpu", text_map: TextMap | None = None,
                 export_dir: str | Path | None = None, *, served: ServingModel | None = None,
                 checkpoint: str | Path | None = None):
        """`model`: a torch RelevanceModel, or None where the scorer runs on `served` (the serving files of
        `checkpoint`, which the torch model is loaded from if a path needs it). `config`: the model's sections and
        the caller's runtime settings (embedding.image_runtime, search.text_runtime); ONNX exports are kept in
        `export_dir` (the checkpoint folder)."""
        if model is None and (served is None or checkpoint is None):
            raise ValueError("a scorer needs a torch model, or serving files and their checkpoint")
        self._model = model.eval().to(device) if model is not None else None
        self.config, self.device, self.export_dir = config, device, export_dir
        self.checkpoint = checkpoint
        self.served = served
        self.head = served.head if served is not None else ServingHead(head_arrays(model))
        self._photos = None  # the torch photo path (PhotoEncoder), made on first use
        self.text_map = text_map
        self.bank = None  # (captions, dim) text embeddings of the query bank (search.ranking: qb_cosine)
        self.onnx_text = served.text if served is not None else None  # queries through ONNX Runtime (CPU only)
        self.query_cache: OrderedDict[str, np.ndarray] = OrderedDict()  # text -> embedding, most recent last
        self.query_cache_size = config.search.query_cache
        self.fingerprint: str | None = None
        if model is not None and served is None and _on_cpu(device) and export_dir is not None:
            self.use_text_runtime(config.search.text_runtime, export_dir)

    @property
    def model(self):
        """The torch RelevanceModel, loaded from the checkpoint on first use (this imports torch)."""
        if self._model is None:
            self._model = load_checkpoint(self.checkpoint, self.config)[0].eval().to(self.device)
        return self._model

    @property
    def dim(self) -> int:
        return self.head.dim

    @property
    def photos(self):
        """The torch photo path (PhotoEncoder) of embedding.*, made on first use: a GPU where embedding.device finds
        one, else the CPU in embedding.image_runtime. Its ONNX image towers go into the serving files."""
        if self._photos is None:
            import torch

            from wsense.models.photos import PhotoEncoder, photo_device

            model, config, embedding = self.model, self.config, self.config.embedding
            photos_on = photo_device(embedding.device) if _on_cpu(self.device) else torch.device(self.device)
            if photos_on.type == "cpu":
                runtime = embedding.image_runtime if self.export_dir is not None else "torch"
                self._photos = PhotoEncoder(model.image_backbone, config.image_backbone, runtime=runtime,
                                            onnx_dir=self.export_dir, batch_size=embedding.image_batch_size)
                if self._photos.onnx is not None and self.served is not None:
                    towers = [{"name": b.name, "size": b.image_size, "mean": list(b.spec.mean),
                               "std": list(b.spec.std)} for b in model.image_backbone.backbones]
                    record_image_towers(self.served, self._photos.onnx, towers, list(config.image_backbone.views))
            else:
                self._photos = PhotoEncoder(model.image_backbone, config.image_backbone, device=photos_on,
                                            batch_size=embedding.gpu_batch_size, precision=embedding.gpu_precision,
                                            decode_on_device=embedding.gpu_decode, workers=embedding.loader_workers)
        return self._photos

    def use_text_runtime(self, runtime: str, directory: str | Path | None = None) -> None:
        """Run the query text path in `runtime` (torch | onnx | onnx_int8); onnx exports it into `directory` the
        first time (the benchmark switches runtimes on one scorer)."""
        self.query_cache.clear()
        if runtime == "torch":
            self.onnx_text = None
        elif runtime in ("onnx", "onnx_int8"):
            if not _on_cpu(self.device):
                raise WsenseError(f"search.text_runtime: {runtime} runs on the CPU, not on {self.device}; use torch")
            if directory is None:
                raise WsenseError("the ONNX text tower needs a folder to keep its export in")
            from wsense.models.text_onnx import OnnxTextPath

            self.onnx_text = OnnxTextPath(self.model, directory, threads=self.config.search.query_threads,
                                          int8=runtime == "onnx_int8")
        else:
            raise WsenseError(f"unknown text runtime '{runtime}' (expected onnx, onnx_int8 or torch)")

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, settings: Config | None = None,
                        device: str = "cpu") -> "RelevanceScorer":
        """The checkpoint's model with the runtime settings of `settings` (the caller's config; default: the
        built-in defaults). On the CPU it runs on the checkpoint's serving files, made from the torch model the first
        time. The map from USE into the model's text space is fitted once (a few seconds) and kept beside the
        checkpoint's weights, as is the query bank."""
        config = load_checkpoint_config(checkpoint, settings)
        fingerprint = model_fingerprint(checkpoint)
        served = open_serving_model(checkpoint, config, fingerprint) if _on_cpu(device) else None
        if served is not None:
            scorer = cls(None, config, device, export_dir=checkpoint, served=served, checkpoint=checkpoint)
        else:
            model, config, _ = load_checkpoint(checkpoint, settings)
            scorer = cls(model, config, device, export_dir=checkpoint, checkpoint=checkpoint)
            if _on_cpu(device):
                scorer.served = make_serving_model(model, checkpoint, config, fingerprint, scorer.onnx_text)
                scorer.head = scorer.served.head
                _name_image_towers_made_before(scorer, checkpoint)
        scorer.fingerprint = fingerprint
        if config.search.ranking == "qb_cosine":
            bank_path = Path(checkpoint) / BANK_FILE
            scorer.bank = load_bank(bank_path, scorer.dim) if bank_path.is_file() else None
            if scorer.bank is None:
                scorer.bank = build_query_bank(scorer, config)
                save_bank(bank_path, scorer.bank)
        if config.search.multilingual == "use_map":
            path = Path(checkpoint) / TEXT_MAP_FILE
            search = config.search
            if path.is_file():
                scorer.text_map = TextMap.load(path, search.multilingual_alpha, search.multilingual_gamma)
            if scorer.text_map is None:
                scorer.text_map = fit_text_map(scorer, config)
                scorer.text_map.save(path)
        return scorer

    def compile_text_tower(self) -> None:
        """torch.compile the text transformer: about a third faster per query on CPU, after a one-off
        compilation of half a minute, so it pays off in a server, not in a one-shot command. Nothing to do
        where queries run in ONNX Runtime (search.text_runtime: onnx), which is faster still."""
        if self.onnx_text is not None:
            print("text tower: ONNX Runtime (search.text_runtime: onnx); --compile applies to torch only",
                  file=sys.stderr)
            return
        import torch

        encoder = self.model.text_encoder
        encoder.model = torch.compile(encoder.model, dynamic=True)
        self.embed_texts(["warm-up query", "a second, longer warm-up query for another shape"])

    def embed_features(self, features) -> np.ndarray:
        """Projected photo embeddings from pooled features (PhotoEncoder's output)."""
        return self.head.embed_features(np.asarray(features, np.float32))

    def embed_photos(self, paths: Sequence[str | Path], *, skip_unreadable: bool = False,
                     desc: str = "embedding photos", progress: bool = True, pooled_out: list | None = None
                     ) -> tuple[list, np.ndarray, list[tuple[str | Path, str]]]:
        """(paths embedded, their embeddings, [(unreadable path, why)]); an unreadable photo is an error unless
        `skip_unreadable`. The pooled features of each batch are appended to `pooled_out` when given."""
        done, chunks, skipped = [], [], []
        for good, vectors, bad, features in self.photo_batches(paths, skip_unreadable=skip_unreadable, desc=desc,
                                                               progress=progress):
            done += good
            chunks.append(vectors)
            skipped += bad
            if pooled_out is not None:
                pooled_out.append(features)
        return done, np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32), skipped

    def photo_batches(self, paths: Sequence[str | Path], *, skip_unreadable: bool = False,
                      desc: str = "embedding photos", progress: bool = True):
        """embed_photos one batch at a time, with one progress bar: (paths embedded, their embeddings, [(unreadable
        path, why)], their pooled features) per batch, for a caller that keeps what is done as it goes."""
        if not len(paths):  # nothing new to index: no photo path to load
            return
        for good, features, bad in self.photos.batches(paths, skip_unreadable=skip_unreadable, desc=desc,
                                                       progress=progress):
            features = np.asarray(features, np.float32)
            yield good, self.embed_features(features), bad, features

    def embed_images(self, paths: Sequence[str | Path], progress: bool = True) -> np.ndarray:
        """Embeddings of photo files, one row each, in order (an unreadable photo is an error)."""
        return self.embed_photos(paths, progress=progress)[1]

    def upload_features(self, path: str | Path) -> np.ndarray:
        """One photo's pooled features (1 x width), through the serving files' ONNX photo path where they name the
        image towers (no torch), else through the torch photo path (which names them there for next time)."""
        if self.served is not None and self.served.has_photo_path:  # one upload path, torch loaded or not
            return self.served.photos.features([path])
        pooled: list = []
        self.embed_photos([path], progress=False, pooled_out=pooled)
        return np.asarray(pooled[0], np.float32)

    def embed_upload(self, path: str | Path) -> np.ndarray:
        """One photo's embedding (see upload_features)."""
        return self.embed_features(self.upload_features(path))[0]

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Text embeddings; Cyrillic texts go through the multilingual map where the scorer has one. The last
        search.query_cache texts are kept, so a repeated query costs no text tower."""
        texts = list(texts)
        if not self.query_cache_size:
            return self._embed_texts(texts, batch_size)
        cache = self.query_cache
        missing = [text for text in dict.fromkeys(texts) if text not in cache]
        if missing:
            cache.update(zip(missing, [row.copy() for row in self._embed_texts(missing, batch_size)]))
        for text in texts:
            cache.move_to_end(text)
        found = np.stack([cache[text] for text in texts]) if texts else self._embed_texts([], batch_size)
        while len(cache) > self.query_cache_size:
            cache.popitem(last=False)
        return found

    def _embed_texts(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.text_map is None or not any(is_cyrillic(t) for t in texts):
            return self.embed_english(texts, batch_size)
        russian = [i for i, t in enumerate(texts) if is_cyrillic(t)]
        other = [i for i, t in enumerate(texts) if not is_cyrillic(t)]
        vectors = np.zeros((len(texts), self.dim), np.float32)
        vectors[russian] = self.text_map([texts[i] for i in russian], self.embed_english,
                                         self.config.search.multilingual_gloss)
        if other:
            vectors[other] = self.embed_english([texts[i] for i in other], batch_size)
        return vectors

    def embed_english(self, texts: Sequence[str], batch_size: int = 256, *, torch_tower: bool = False
                      ) -> np.ndarray:
        """Text embeddings through the model's own (English) text tower, in the configured runtime or, with
        `torch_tower`, in torch as in training (the multilingual map's teacher)."""
        if self.onnx_text is not None and not torch_tower:
            tokenize = self.served.token_arrays if self.served is not None else self.model.text_encoder.token_arrays
            return onnx_text_embeddings(self.onnx_text, tokenize, texts, self.dim)
        import torch

        model, chunks = self.model, []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                ids, mask = model.text_encoder.token_arrays(list(texts[start:start + batch_size]))
                batch = {"input_ids": torch.from_numpy(ids).to(self.device),
                         "attention_mask": torch.from_numpy(mask).to(self.device)}
                chunks.append(model.encode_texts(batch).float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def relevance(self, v: np.ndarray, u: np.ndarray, image_part: np.ndarray | None = None) -> np.ndarray:
        """Fusion relevance, texts x images; `image_part`: see fusion_image_part."""
        return self.head.relevance(v, u, image_part)

    def photo_offsets(self, u: np.ndarray) -> np.ndarray:
        """Each photo's query-bank offset times search.bank_weight: what search.ranking qb_cosine subtracts from
        the cosine (wsense.serving.query_bank)."""
        if self.bank is None:
            raise WsenseError("search.ranking qb_cosine needs the query bank; load the scorer with from_checkpoint")
        search = self.config.search
        return search.bank_weight * bank_offsets(self.bank, np.asarray(u, np.float32), search.bank_beta)

    def fusion_image_part(self, u: np.ndarray) -> np.ndarray:
        """The fusion head's per-image terms, computed once for a catalog (see FusionHead.image_part)."""
        return self.head.image_part(u)


def _name_image_towers_made_before(scorer: RelevanceScorer, checkpoint: str | Path) -> None:
    """Where the checkpoint folder has its image towers' ONNX exports already (an index was built with it), name them
    in the serving files now: an upload then runs without torch from the first start on."""
    from wsense.models.image_onnx import FILE_PREFIX, image_path_key

    backbones = scorer.model.image_backbone.backbones
    if scorer.config.embedding.image_runtime != "torch" and all(
            (Path(checkpoint) / f"{FILE_PREFIX}{b.name}-{image_path_key(b, b.image_size)}.onnx").is_file()
            for b in backbones):
        scorer.photos  # noqa: B018  (opening the photo path names its exports)


def build_query_bank(scorer: RelevanceScorer, config, exclude_images: Collection[str] = ()) -> np.ndarray:
    """The query bank's embeddings: the allowed training captions through the model's own text tower (torch, as in
    training), none of those of `exclude_images` (validation)."""
    from wsense.data import load_data

    try:
        captions = load_data(config.data_dir, check_images=False).captions
    except WsenseError as error:
        raise WsenseError(f"the query bank is built once from the training captions, which are missing: {error}; "
                          "or set search.ranking: cosine or fusion") from None
    return scorer.embed_english(bank_texts(captions, exclude_images), torch_tower=True)


def fit_text_map(scorer: RelevanceScorer, config, exclude_images: Collection[str] = ()) -> TextMap:
    """Fit the USE -> text-space map with the model's own text tower as the teacher (see text_map_pairs);
    `exclude_images`: leave out the captions of these images, English and Russian (validation)."""
    from wsense.data import load_data

    try:
        captions = load_data(config.data_dir, check_images=False).captions
    except WsenseError as error:
        raise WsenseError(f"the multilingual map is fitted once on the training captions, which are missing: {error}; "
                          "or set search.multilingual: none") from None
    pairs = text_map_pairs(config, captions, exclude_images)
    def teacher(texts: list[str]) -> np.ndarray:
        return scorer.embed_english(texts, torch_tower=True)

    return TextMap.fit(pairs, teacher, config.search.multilingual_alpha, config.search.multilingual_gamma)


def text_map_pairs(config, captions: pd.DataFrame, exclude_images: Collection[str] = ()) -> list[tuple[str, str]]:
    """(source, English) pairs the map is fitted on: texts the model was trained with, the English training
    captions and label prompts (English -> themselves) and the Russian training captions of
    data.russian_train_captions (Russian -> their English original); none of the captions of `exclude_images`."""
    from wsense.models.label_bridge import imagenet_label_prompts

    captions = captions[~captions["image"].isin(set(exclude_images))]
    english = captions["query_text"].tolist() + imagenet_label_prompts()
    pairs = [(text, text) for text in english]
    if config.data.russian_train_captions and not Path(config.data.russian_train_captions).is_file():
        print(f"warning: {config.data.russian_train_captions}: Russian training captions not found; fitting the "
              "multilingual map on English texts only (Russian search is weaker)", file=sys.stderr)
    elif config.data.russian_train_captions:
        russian = read_translations(config.data.russian_train_captions)
        known = captions.set_index("query_id")["query_text"]
        pairs += [(text, known[query_id]) for query_id, text in russian.items() if query_id in known.index]
    return pairs


def read_translations(path: str | Path) -> pd.Series:
    """A `query_id|query_text_ru` file as a Series indexed by query id, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise WsenseError(f"{path}: Russian captions not found")
    import pandas as pd

    frame = pd.read_csv(path, sep="|", dtype=str, keep_default_na=False)
    if list(frame.columns) != ["query_id", "query_text_ru"]:
        raise WsenseError(f"{path}: expected the columns query_id|query_text_ru, found {'|'.join(frame.columns)}")
    empty = frame["query_text_ru"].str.strip() == ""
    if empty.any():
        raise WsenseError(f"{path}: row {int(empty.to_numpy().argmax()) + 2}: empty translation")
    return frame.set_index("query_id")["query_text_ru"]
