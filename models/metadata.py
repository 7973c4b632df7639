"""What a model file says about itself: GGUF metadata, a Hugging Face folder's config and
tokenizer config, a sentence-transformers folder's embedding dimension.

``read_metadata(path)`` never loads weights: a GGUF is memory-mapped and only its key/value header
is read; a folder's JSON files are parsed. Anything that is not a GGUF file or a model folder raises
``NotAModelError`` saying what was expected.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
#: Weights files a Hugging Face / sentence-transformers folder may hold.
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class NotAModelError(ValueError):
    """The path is not a GGUF file nor a Hugging Face / sentence-transformers model folder."""


@dataclass(frozen=True)
class ModelMetadata:
    format: str  # "gguf" | "hf" | "sentence-transformers"
    architecture: str
    name: str | None
    context_length: int | None
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    # Tokens that end an assistant turn besides EOS (end-of-turn, end-of-message), as text.
    end_of_turn_tokens: tuple[str, ...]
    add_bos_token: bool
    quantization: str | None
    size_bytes: int  # of the file, or of every file in the folder
    embedding_dim: int | None = None
    # The file inside a folder whose sha256 a card records (None for a single file).
    weights_file: str | None = None
    # A sentence-transformers folder's retrieval prompts (config_sentence_transformers.json).
    query_prompt: str | None = None
    document_prompt: str | None = None

    @property
    def stop_tokens(self) -> tuple[str, ...]:
        """EOS and end-of-turn tokens as text, each once, EOS first."""
        found = (self.eos_token, *self.end_of_turn_tokens)
        return tuple(dict.fromkeys(t for t in found if t))

    @property
    def capabilities(self) -> tuple[str, ...]:
        if self.format == "sentence-transformers":
            return ("embedding",)
        return ("completion", "chat")


def read_metadata(path: Path) -> ModelMetadata:
    path = Path(path)
    if not path.exists():
        raise NotAModelError(f"{path} does not exist")
    if path.is_dir():
        return _read_folder(path)
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise NotAModelError(
            f"{path} is not a GGUF file (it does not begin with 'GGUF') nor a model folder; "
            "give a .gguf file or a Hugging Face folder with config.json and *.safetensors"
        )
    return _read_gguf(path)


# ---- GGUF ---------------------------------------------------------------------------------------
# A reader of the key/value header only (the gguf package parses every tensor and token up front,
# seconds for a large vocabulary). Layout: magic, version u32, tensor count u64, kv count u64, then
# per key: name (u64 length + UTF-8), value type u32, value.

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
#: general.file_type values (llama.cpp's llama_ftype) worth naming.
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    30: "IQ4_XS",
    32: "BF16",
}


class _GGUFHeader:
    """Scalar and string values by key; ``token(i)``: the vocabulary's i-th token text."""

    def __init__(self, path: Path) -> None:
        self.values: dict[str, Any] = {}
        self.token_texts: list[bytes] = []
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            self._buf = buf
            self._parse(path)

    def _parse(self, path: Path) -> None:
        buf = self._buf
        version, _n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise NotAModelError(f"{path}: GGUF version {version} is too old; convert it again")
        pos = 24
        for _ in range(n_kv):
            key, pos = self._string(pos)
            (kind,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if kind == _ARRAY:
                item, count = struct.unpack_from("<IQ", buf, pos)
                pos += 12
                if item == _STRING:
                    keep = key == "tokenizer.ggml.tokens"
                    pos = self._strings(pos, count, self.token_texts if keep else None)
                elif item in _SCALARS:
                    pos += struct.calcsize(_SCALARS[item]) * count
                else:
                    raise NotAModelError(f"{path}: unsupported GGUF array of type {item} at {key}")
            elif kind == _STRING:
                self.values[key], pos = self._string(pos)
            elif kind in _SCALARS:
                (self.values[key],) = struct.unpack_from(_SCALARS[kind], buf, pos)
                pos += struct.calcsize(_SCALARS[kind])
            else:
                raise NotAModelError(f"{path}: unknown GGUF value type {kind} at {key}")

    def _string(self, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", self._buf, pos)
        pos += 8
        return self._buf[pos : pos + n].decode("utf-8", errors="replace"), pos + n

    def _strings(self, pos: int, count: int, out: list[bytes] | None) -> int:
        """Walk ``count`` strings from ``pos`` (appending them to ``out``); the end offset."""
        buf = self._buf
        for _ in range(count):
            (n,) = struct.unpack_from("<Q", buf, pos)
            if out is not None:
                out.append(buf[pos + 8 : pos + 8 + n])
            pos += 8 + n
        return pos

    def token(self, key: str) -> str | None:
        token_id = self.values.get(key)
        texts = self.token_texts
        if not isinstance(token_id, int) or not 0 <= token_id < len(texts):
            return None
        return texts[token_id].decode("utf-8", errors="replace")


def _read_gguf(path: Path) -> ModelMetadata:
    try:
        header = _GGUFHeader(path)
    except (struct.error, ValueError, OSError) as exc:
        if isinstance(exc, NotAModelError):
            raise
        raise NotAModelError(
            f"{path} is not a valid GGUF file (truncated or corrupt): {exc}"
        ) from None
    value = header.values.get
    arch = value("general.architecture") or "unknown"
    file_type = value("general.file_type")
    quant = _FILE_TYPES.get(file_type, f"file_type {file_type}") if file_type is not None else None
    eot = tuple(
        t
        for t in (
            header.token("tokenizer.ggml.eot_token_id"),
            header.token("tokenizer.ggml.eom_token_id"),
        )
        if t
    )
    add_bos = value("tokenizer.ggml.add_bos_token")
    return ModelMetadata(
        format="gguf",
        architecture=arch,
        name=value("general.name"),
        context_length=value(f"{arch}.context_length"),
        chat_template=value("tokenizer.chat_template"),
        bos_token=header.token("tokenizer.ggml.bos_token_id"),
        eos_token=header.token("tokenizer.ggml.eos_token_id"),
        end_of_turn_tokens=eot,
        # llama.cpp's default when the key is absent: add BOS for SentencePiece vocabularies.
        add_bos_token=bool(add_bos)
        if add_bos is not None
        else value("tokenizer.ggml.model") == "llama",
        quantization=quant,
        size_bytes=path.stat().st_size,
    )


# ---- folders ------------------------------------------------------------------------------------


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotAModelError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise NotAModelError(f"{path} does not hold a JSON object")
    return data


def _token_text(value: object) -> str | None:
    """A tokenizer_config special token: a string or an AddedToken-like ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _weights(folder: Path) -> list[Path]:
    return sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern))


def _read_folder(folder: Path) -> ModelMetadata:
    config_path = folder / "config.json"
    weights = _weights(folder)
    if not config_path.exists() or not weights:
        raise NotAModelError(
            f"{folder} is not a model folder: it needs config.json and weights (*.safetensors or "
            "pytorch_model.bin) as a Hugging Face or sentence-transformers model has"
        )
    config = _json(config_path)
    tok_path = folder / "tokenizer_config.json"
    tok = _json(tok_path) if tok_path.exists() else {}
    template = tok.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    jinja = folder / "chat_template.jinja"
    if template is None and jinja.exists():
        template = jinja.read_text(encoding="utf-8")
    is_st = (folder / "modules.json").exists() or (
        folder / "config_sentence_transformers.json"
    ).exists()
    archs = config.get("architectures") or [config.get("model_type", "unknown")]
    text_config = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    context = config.get("max_position_embeddings") or text_config.get("max_position_embeddings")
    if is_st:
        context = _st_max_seq_length(folder) or context
    add_bos = tok.get("add_bos_token")
    return ModelMetadata(
        format="sentence-transformers" if is_st else "hf",
        architecture=str(archs[0]),
        name=config.get("_name_or_path") or folder.name,
        context_length=int(context) if context else None,
        chat_template=template if isinstance(template, str) else None,
        bos_token=_token_text(tok.get("bos_token")),
        eos_token=_token_text(tok.get("eos_token")),
        end_of_turn_tokens=(),
        add_bos_token=bool(add_bos) if add_bos is not None else False,
        quantization=str(config.get("torch_dtype") or config.get("dtype") or "") or None,
        size_bytes=sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
        embedding_dim=_embedding_dim(folder, config) if is_st else None,
        weights_file=weights[0].relative_to(folder).as_posix(),
        **(_st_prompts(folder) if is_st else {}),
    )


def _st_prompts(folder: Path) -> dict[str, str]:
    """``query_prompt``/``document_prompt`` from the folder's named prompts ("query"/"document",
    or "Retrieval-query"/"Retrieval-document"), those it names."""
    path = folder / "config_sentence_transformers.json"
    prompts = _json(path).get("prompts") if path.exists() else None
    if not isinstance(prompts, dict):
        return {}
    found = {}
    for field, names in (
        ("query_prompt", ("query", "Retrieval-query")),
        ("document_prompt", ("document", "Retrieval-document")),
    ):
        value = next((prompts[n] for n in names if isinstance(prompts.get(n), str)), None)
        if value:
            found[field] = value
    return found


def _st_max_seq_length(folder: Path) -> int | None:
    path = folder / "sentence_bert_config.json"
    if not path.exists():
        return None
    value = _json(path).get("max_seq_length")
    return int(value) if value else None


def _embedding_dim(folder: Path, config: dict[str, Any]) -> int | None:
    """The pooled output's width: the last Dense layer's, else the pooling's, else hidden_size."""
    for dense in sorted(folder.glob("*_Dense/config.json"), reverse=True):
        out = _json(dense).get("out_features")
        if out:
            return int(out)
    for pooling in sorted(folder.glob("*_Pooling/config.json")):
        dim = _json(pooling).get("word_embedding_dimension")
        if dim:
            return int(dim)
    hidden = config.get("hidden_size") or config.get("d_model")
    return int(hidden) if hidden else None
