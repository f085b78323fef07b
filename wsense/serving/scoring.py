"""Scoring with a trained relevance model outside training: image files and query texts in, scores out."""
from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path
from typing import Collection, Sequence

import numpy as np
import pandas as pd
import torch

from wsense.config import Config
from wsense.errors import WsenseError
from wsense.models.checkpoint import load_checkpoint
from wsense.models.multilingual import TextMap, is_cyrillic
from wsense.models.photos import PhotoEncoder, photo_device
from wsense.models.relevance import RelevanceModel
from wsense.serving.query_bank import BANK_FILE, bank_offsets, bank_texts, load_bank, save_bank


TEXT_MAP_FILE = "text_map.npz"
ONNX_TEXT_BATCH = 8  # texts per ONNX Runtime call of the fp32 query tower


class RelevanceScorer:
    """A checkpoint's model at inference: photos through the one photo path (wsense.models.photos), query texts
    through the text tower in the configured runtime (or, for Cyrillic, the multilingual map), and the fusion
    head's relevance."""

    def __init__(self, model: RelevanceModel, config: Config, device: str | torch.device = "cpu",
                 text_map: TextMap | None = None, export_dir: str | Path | None = None):
        """`config`: the model's sections and the caller's runtime settings (embedding.image_runtime,
        search.text_runtime); ONNX exports are kept in `export_dir` (the checkpoint folder)."""
        self.model = model.eval().to(device)
        self.config = config
        self.device = torch.device(device)
        on_cpu = self.device.type == "cpu"
        # Photos go to a GPU where embedding.device finds one, even when queries and the fusion head stay here.
        photos_on = photo_device(config.embedding.device) if on_cpu else self.device
        if photos_on.type == "cpu":
            image_runtime = config.embedding.image_runtime if export_dir is not None else "torch"
            self.photos = PhotoEncoder(model.image_backbone, config.image_backbone, runtime=image_runtime,
                                       onnx_dir=export_dir, batch_size=config.embedding.image_batch_size)
        else:
            embedding = config.embedding
            self.photos = PhotoEncoder(model.image_backbone, config.image_backbone, device=photos_on,
                                       batch_size=embedding.gpu_batch_size, precision=embedding.gpu_precision,
                                       decode_on_device=embedding.gpu_decode, workers=embedding.loader_workers)
        self.text_map = text_map
        self.bank = None  # (captions, dim) text embeddings of the query bank (search.ranking: qb_cosine)
        self.onnx_text = None  # an OnnxTextPath: queries go through ONNX Runtime instead of torch (CPU only)
        self.query_cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # text -> embedding, most recent last
        self.query_cache_size = config.search.query_cache
        if on_cpu and export_dir is not None:
            self.use_text_runtime(config.search.text_runtime, export_dir)

    def use_text_runtime(self, runtime: str, directory: str | Path | None = None) -> None:
        """Run the query text path in `runtime` (torch | onnx | onnx_int8); onnx exports it into `directory` the
        first time (the benchmark switches runtimes on one scorer)."""
        self.query_cache.clear()
        if runtime == "torch":
            self.onnx_text = None
        elif runtime in ("onnx", "onnx_int8"):
            if self.device.type != "cpu":
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
        built-in defaults). The map from USE into the model's text space is fitted once (a few seconds) and kept
        beside the checkpoint's weights."""
        model, config, _ = load_checkpoint(checkpoint, settings)
        scorer = cls(model, config, device, export_dir=checkpoint)
        if config.search.ranking == "qb_cosine":
            bank_path = Path(checkpoint) / BANK_FILE
            scorer.bank = load_bank(bank_path, model.text_projection.out_features) if bank_path.is_file() else None
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
        encoder = self.model.text_encoder
        encoder.model = torch.compile(encoder.model, dynamic=True)
        self.embed_texts(["warm-up query", "a second, longer warm-up query for another shape"])

    @torch.inference_mode()
    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """Projected photo embeddings from pooled features (PhotoEncoder's output)."""
        return self.model.embed_image(features.to(self.device)).float().cpu()

    def embed_photos(self, paths: Sequence[str | Path], *, skip_unreadable: bool = False,
                     desc: str = "embedding photos", progress: bool = True,
                     pooled_out: list[torch.Tensor] | None = None
                     ) -> tuple[list, torch.Tensor, list[tuple[str | Path, str]]]:
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
        dim = self.model.text_projection.out_features
        return done, torch.cat(chunks) if chunks else torch.zeros(0, dim), skipped

    def photo_batches(self, paths: Sequence[str | Path], *, skip_unreadable: bool = False,
                      desc: str = "embedding photos", progress: bool = True):
        """embed_photos one batch at a time, with one progress bar: (paths embedded, their embeddings, [(unreadable
        path, why)], their pooled features) per batch, for a caller that keeps what is done as it goes."""
        for good, features, bad in self.photos.batches(paths, skip_unreadable=skip_unreadable, desc=desc,
                                                       progress=progress):
            yield good, self.embed_features(features), bad, features

    def embed_images(self, paths: Sequence[str | Path], progress: bool = True) -> torch.Tensor:
        """Embeddings of photo files, one row each, in order (an unreadable photo is an error)."""
        return self.embed_photos(paths, progress=progress)[1]

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Text embeddings; Cyrillic texts go through the multilingual map where the scorer has one. The last
        search.query_cache texts are kept, so a repeated query costs no text tower."""
        texts = list(texts)
        if not self.query_cache_size:
            return self._embed_texts(texts, batch_size)
        cache = self.query_cache
        missing = [text for text in dict.fromkeys(texts) if text not in cache]
        if missing:
            cache.update(zip(missing, [row.clone() for row in self._embed_texts(missing, batch_size)]))
        for text in texts:
            cache.move_to_end(text)
        found = torch.stack([cache[text] for text in texts]) if texts else self._embed_texts([], batch_size)
        while len(cache) > self.query_cache_size:
            cache.popitem(last=False)
        return found

    def _embed_texts(self, texts: list[str], batch_size: int) -> torch.Tensor:
        if self.text_map is None or not any(is_cyrillic(t) for t in texts):
            return self.embed_english(texts, batch_size)
        russian = [i for i, t in enumerate(texts) if is_cyrillic(t)]
        other = [i for i, t in enumerate(texts) if not is_cyrillic(t)]
        vectors = torch.zeros(len(texts), self.model.text_projection.out_features)
        vectors[russian] = self.text_map([texts[i] for i in russian], self.embed_english,
                                         self.config.search.multilingual_gloss)
        if other:
            vectors[other] = self.embed_english([texts[i] for i in other], batch_size)
        return vectors

    @torch.inference_mode()
    def embed_english(self, texts: Sequence[str], batch_size: int = 256, *, torch_tower: bool = False
                      ) -> torch.Tensor:
        """Text embeddings through the model's own (English) text tower, in the configured runtime or, with
        `torch_tower`, in torch as in training (the multilingual map's teacher)."""
        encoder = self.model.text_encoder
        chunks = []
        if self.onnx_text is not None and not torch_tower and texts:
            # Texts of similar length together, in small batches: the fp32 tower's cost grows with the padded length,
            # and on a CPU a batch saves little else (int8 runs each text alone anyway: OnnxTextPath.run).
            ids, mask = encoder.token_arrays(list(texts))
            lengths = mask.sum(1)
            order = np.argsort(lengths, kind="stable")
            out = np.zeros((len(texts), self.model.text_projection.out_features), np.float32)
            for start in range(0, len(texts), ONNX_TEXT_BATCH):
                rows = order[start:start + ONNX_TEXT_BATCH]
                width = int(lengths[rows].max())
                out[rows] = self.onnx_text(ids[rows, :width], mask[rows, :width])
            return torch.from_numpy(out)
        for start in range(0, len(texts), batch_size):
            ids, mask = encoder.token_arrays(list(texts[start:start + batch_size]))
            batch = {"input_ids": torch.from_numpy(ids).to(self.device),
                     "attention_mask": torch.from_numpy(mask).to(self.device)}
            chunks.append(self.model.encode_texts(batch).float().cpu())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.model.text_projection.out_features)

    @torch.inference_mode()
    def relevance(self, v: torch.Tensor, u: torch.Tensor, image_part: torch.Tensor | None = None) -> torch.Tensor:
        """Fusion relevance, texts x images; `image_part`: see fusion_image_part."""
        if image_part is not None:
            image_part = image_part.to(self.device)
        return self.model.relevance_matrix(v.to(self.device), u.to(self.device), image_part).cpu()

    def photo_offsets(self, u: torch.Tensor | np.ndarray) -> np.ndarray:
        """Each photo's query-bank offset times search.bank_weight: what search.ranking qb_cosine subtracts from
        the cosine (wsense.serving.query_bank)."""
        if self.bank is None:
            raise WsenseError("search.ranking qb_cosine needs the query bank; load the scorer with from_checkpoint")
        search = self.config.search
        photos = u.numpy() if isinstance(u, torch.Tensor) else u
        return search.bank_weight * bank_offsets(self.bank, photos, search.bank_beta)

    @torch.inference_mode()
    def fusion_image_part(self, u: torch.Tensor) -> torch.Tensor:
        """The fusion head's per-image terms, computed once for a catalog (see FusionHead.image_part)."""
        return self.model.fusion.image_part(u.to(self.device)).float().cpu()


def build_query_bank(scorer: RelevanceScorer, config, exclude_images: Collection[str] = ()) -> np.ndarray:
    """The query bank's embeddings: the allowed training captions through the model's own text tower (torch, as in
    training), none of those of `exclude_images` (validation)."""
    from wsense.data import load_data

    try:
        captions = load_data(config.data_dir, check_images=False).captions
    except WsenseError as error:
        raise WsenseError(f"the query bank is built once from the training captions, which are missing: {error}; "
                          "or set search.ranking: cosine or fusion") from None
    return scorer.embed_english(bank_texts(captions, exclude_images), torch_tower=True).numpy()


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
    def teacher(texts: list[str]) -> torch.Tensor:
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
    frame = pd.read_csv(path, sep="|", dtype=str, keep_default_na=False)
    if list(frame.columns) != ["query_id", "query_text_ru"]:
        raise WsenseError(f"{path}: expected the columns query_id|query_text_ru, found {'|'.join(frame.columns)}")
    empty = frame["query_text_ru"].str.strip() == ""
    if empty.any():
        raise WsenseError(f"{path}: row {int(empty.to_numpy().argmax()) + 2}: empty translation")
    return frame.set_index("query_id")["query_text_ru"]
