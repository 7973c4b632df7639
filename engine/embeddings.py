"""Sentence embeddings from a local sentence-transformers folder only.

``Embedder`` is the one embedding class: the engine's, the document services' and the one that
benchmarks and tests load without an engine (``Embedder.load``). ``[embeddings] runtime`` picks how
it computes: ``torch`` runs sentence-transformers (fp32); ``onnx-int8`` / ``onnx-fp32`` run ONNX
Runtime on the transformer exported by ``install-models`` (``models.onnx_export``), with the same
tokenizer, truncation, pooling and normalization as sentence-transformers. ``encode`` blocks (both
runtimes release the GIL while they compute); ``embed`` runs it in a worker thread. One lock
serializes calls so two requests never oversubscribe the configured threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from configs import EmbeddingSettings
    from models import ModelCard

log = logging.getLogger(__name__)


class TextEmbedder(Protocol):
    """What the document services need from an embedding model (``Embedder``, or a stand-in)."""

    @property
    def dim(self) -> int: ...

    @property
    def tokenizer(self) -> Any:
        """The model's own tokenizer (Hugging Face fast): chunk sizes are counted with it."""
        ...

    async def embed(self, texts: list[str], input_type: InputType = None) -> np.ndarray:
        """(n, dim) float32, L2-normalized rows; never blocks the event loop. ``input_type``
        "query"/"document" prefixes the model's prompt for that side of a search, if it has one."""
        ...


#: Which side of a search a text is on: its model may expect a prompt before it (None: no prompt).
InputType = Literal["query", "document"] | None
INPUT_TYPES = ("query", "document")


def with_prompt(card: ModelCard, texts: list[str], input_type: InputType) -> list[str]:
    """``texts`` behind the card's query or document prompt (unchanged when it has none), as
    sentence-transformers' ``prompt=`` does for a model whose pooling includes the prompt."""
    prompt = {"query": card.query_prompt, "document": card.document_prompt}.get(input_type or "")
    return [prompt + t for t in texts] if prompt else list(texts)


class Embedder:
    def __init__(self, card: ModelCard, path: Path, settings: EmbeddingSettings):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.card = card
        self._settings = settings
        self._lock = threading.Lock()
        self.runtime = settings.runtime
        if self.runtime != "torch":
            from models.onnx_export import onnx_exportable

            if onnx_exportable(path):
                self._init_onnx(card, path, settings)
                return
            log.warning(
                "embeddings: %s cannot run on ONNX (its modules are not Transformer + Pooling); "
                "using torch",
                card.id,
            )
            self.runtime = "torch"
        self._onnx: Any = None
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(settings.n_threads)
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.max_seq_length: int = int(self._model.max_seq_length)
        self.dim: int = int(self._model.get_embedding_dimension())
        self._log_loaded()

    def _log_loaded(self) -> None:
        log.info(
            "embeddings: %s loaded (%s, dim %d, max %d word pieces)",
            self.card.id,
            self.runtime,
            self.dim,
            self.max_seq_length,
        )

    def _init_onnx(self, card: ModelCard, path: Path, settings: EmbeddingSettings) -> None:
        import json

        import onnxruntime as ort
        from transformers import AutoTokenizer

        from models.onnx_export import export_onnx, pooling_mode, verify_onnx

        models_dir = path.parent
        export_onnx(card, path, models_dir)  # already there: only checked
        onnx_file = verify_onnx(card, models_dir, settings.runtime)
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.n_threads
        options.inter_op_num_threads = 1
        self._onnx = ort.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self._onnx_inputs = {i.name for i in self._onnx.get_inputs()}
        self._pooling = pooling_mode(path)
        st_config = json.loads((path / "sentence_bert_config.json").read_text())
        self._lower = bool(st_config.get("do_lower_case", False))
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.max_seq_length = int(st_config.get("max_seq_length") or card.context_length)
        self.dim = int(self._onnx.get_outputs()[0].shape[-1] or card.embedding_dim)
        self._model = None
        self._log_loaded()

    @property
    def tokenizer(self) -> Any:
        """The model's own (Hugging Face fast) tokenizer: chunking must count with this."""
        return self._tokenizer if self._onnx is not None else self._model.tokenizer

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Word pieces each text takes, special tokens included (truncation not applied)."""
        enc = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in enc]

    def encode(self, texts: list[str], input_type: InputType = None) -> np.ndarray:
        """(n, dim) float32, L2-normalized rows. Inputs longer than max_seq_length are truncated.
        ``input_type``: see :func:`with_prompt`."""
        texts = with_prompt(self.card, texts, input_type)
        if self._onnx is not None:
            with self._lock:
                return self._encode_onnx(texts)
        with self._lock:
            vecs = self._model.encode(
                texts,
                batch_size=self._settings.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)

    def _encode_onnx(self, texts: list[str]) -> np.ndarray:
        """Batches of similar length (longest first, as sentence-transformers sorts them), mean or
        CLS pooling over the attention mask, then L2 normalization."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        size = self._settings.batch_size
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            batch = [texts[i].lower() if self._lower else texts[i] for i in idx]
            enc = self._tokenizer(
                batch,
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="np",
            )
            feed = {k: v.astype(np.int64) for k, v in enc.items() if k in self._onnx_inputs}
            hidden = self._onnx.run(None, feed)[0]
            if self._pooling == "cls":
                pooled = hidden[:, 0, :]
            else:
                mask = enc["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.clip(norms, 1e-12, None)
        return out

    async def embed(self, texts: list[str], input_type: InputType = None) -> np.ndarray:
        """``encode`` in a worker thread."""
        return await asyncio.to_thread(self.encode, texts, input_type)

    @classmethod
    def load(
        cls,
        models_dir: Path,
        model_id: str = "all-minilm-l6-v2",
        threads: int = 2,
        runtime: str = "torch",
    ) -> Embedder:
        """The embedding model ``model_id`` from ``models_dir`` (checked by sha256), for code that
        runs without an ``Engine`` (benchmarks, offline ingestion, tests)."""
        from configs import EmbeddingSettings
        from models.cards import get_card
        from models.store import verify_model

        card = get_card(model_id)
        path = verify_model(card, Path(models_dir))
        return cls(
            card, path, EmbeddingSettings(model=model_id, n_threads=threads, runtime=runtime)
        )


class EmbedderSet:
    """The server's embedder and, by card id, the others a collection was built with (loaded on
    first use by ``load``, which may block: it runs in a worker thread). A collection embeds its
    passages and its queries with its own model; this is where that model is found."""

    def __init__(
        self,
        default: TextEmbedder,
        default_id: str,
        load: Callable[[str], TextEmbedder] | None = None,
    ) -> None:
        self.default = default
        self.default_id = default_id
        self._load = load
        self._loaded: dict[str, TextEmbedder] = {default_id: default}

    async def get(self, model: str | None) -> TextEmbedder:
        """The embedder of ``model`` ("" or None: the server's). Errors name the model: 400 for
        one that is not an embedding card, 422 for one whose files are not installed."""
        if not model or model == self.default_id:
            return self.default
        found = self._loaded.get(model)
        if found is None:
            if self._load is None:
                from engine.errors import UnprocessableError

                raise UnprocessableError(
                    f"embedding model {model!r} cannot be loaded beside {self.default_id!r} here",
                    code="model_not_available",
                )
            found = self._loaded[model] = await asyncio.to_thread(self._load, model)
        return found
