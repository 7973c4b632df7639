"""Export a sentence-transformers folder to ONNX (fp32, and int8 by dynamic quantization).

Runs at install time, offline, from the model files already on disk: ``torch.onnx.export`` of the
transformer (the pooling and normalization are done by the embedder, exactly as
sentence-transformers does them), then ``onnxruntime.quantization.quantize_dynamic`` for the int8
copy. The output lives in ``<models_dir>/onnx/<card id>/`` with a ``MANIFEST.sha256`` of its files
and ``SOURCE.sha256`` naming the weights it was exported from, so a changed model is exported again
and an altered file is refused before it loads.

Only folders whose modules are a Transformer, a mean or CLS Pooling and optionally a Normalize can
be exported (``onnx_exportable``); others keep the torch runtime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from models.cards import ModelCard
from models.digest import MANIFEST, sha256_file, write_manifest

log = logging.getLogger(__name__)

#: ``[embeddings] runtime`` values and the file each one loads.
ONNX_FILES = {"onnx-fp32": "model-fp32.onnx", "onnx-int8": "model-int8.onnx"}
RUNTIMES = ("torch", *ONNX_FILES)
SOURCE = "SOURCE.sha256"
_MODULES_OK = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}


class OnnxExportError(RuntimeError):
    """The folder cannot be exported, or an exported file is missing or altered."""


def onnx_dir(card: ModelCard, models_dir: Path) -> Path:
    return Path(models_dir) / "onnx" / card.id


def pooling_mode(folder: Path) -> str | None:
    """``"mean"`` or ``"cls"`` when the folder is Transformer + Pooling (+ Normalize), else None."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    if {m.get("type") for m in modules} - _MODULES_OK:
        return None
    pooling = next(
        (m for m in modules if m.get("type") == "sentence_transformers.models.Pooling"), None
    )
    if pooling is None:
        return None
    cfg = json.loads((folder / pooling["path"] / "config.json").read_text())
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
    if modes == ["pooling_mode_mean_tokens"]:
        return "mean"
    if modes == ["pooling_mode_cls_token"]:
        return "cls"
    return None


def onnx_exportable(folder: Path) -> bool:
    return pooling_mode(folder) is not None


def verify_onnx(card: ModelCard, models_dir: Path, runtime: str) -> Path:
    """The ONNX file of ``runtime`` after checking the manifest and the source weights' sha256."""
    out = onnx_dir(card, models_dir)
    target = out / ONNX_FILES[runtime]
    if not target.exists() or not (out / MANIFEST).exists():
        raise OnnxExportError(
            f"embedding model {card.id!r}: {target} does not exist; run "
            "`python -m server install-models` (or `make serve`) to export it"
        )
    if (out / SOURCE).read_text().strip() != card.sha256:
        raise OnnxExportError(
            f"embedding model {card.id!r}: {out} was exported from other weights; "
            "run `python -m server install-models` to export it again"
        )
    for line in (out / MANIFEST).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if not (out / name).exists() or sha256_file(out / name) != digest:
            raise OnnxExportError(
                f"embedding model {card.id!r}: {out / name} is missing or altered"
            )
    return target


def export_onnx(card: ModelCard, folder: Path, models_dir: Path) -> Path:
    """Export ``folder`` (the verified model folder of ``card``) once; return the output folder."""
    out = onnx_dir(card, models_dir)
    try:
        verify_onnx(card, models_dir, "onnx-int8")
        verify_onnx(card, models_dir, "onnx-fp32")
        return out
    except OnnxExportError:
        pass
    if not onnx_exportable(folder):
        raise OnnxExportError(
            f"embedding model {card.id!r}: only Transformer + mean/CLS Pooling (+ Normalize) "
            'folders export to ONNX; use `[embeddings] runtime = "torch"`'
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        work = staging / card.id
        work.mkdir()
        _export_fp32(folder, work / "exported.onnx")
        _optimize(folder, work / "exported.onnx", work / ONNX_FILES["onnx-fp32"])
        (work / "exported.onnx").unlink()
        _quantize(work / ONNX_FILES["onnx-fp32"], work / ONNX_FILES["onnx-int8"])
        (work / SOURCE).write_text(card.sha256 + "\n")
        write_manifest(work)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s to ONNX at %s", card.id, out)
    return out


def _export_fp32(folder: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    # eager attention exports as plain MatMul/Softmax, which the optimizer fuses into Attention
    model = AutoModel.from_pretrained(
        str(folder), local_files_only=True, attn_implementation="eager"
    ).eval()
    sample = tokenizer(["a sample sentence", "another one"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in sample:
        names.append("token_type_ids")

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    axes["last_hidden_state"] = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            LastHidden(model),
            tuple(sample[n] for n in names),
            str(target),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _optimize(folder: Path, source: Path, target: Path) -> None:
    """BERT graphs: ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization,
    BiasGelu, EmbedLayerNormalization); measured faster and, once quantized, closer to fp32.
    Other architectures are kept as exported."""
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "bert":
        shutil.copyfile(source, target)
        return
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
    )
    optimized.save_model_to_file(str(target))


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # one INFO line per tensor otherwise
    try:
        # Per-channel int8 weights of the MatMuls: per-tensor scales cost up to 0.24 cosine on long
        # inputs; per-channel keeps every sentence within 0.98 of fp32 (tests/engine).
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            extra_options={"DefaultTensorType": 1},  # FLOAT: fused ops have no inferred type
        )
    finally:
        root.setLevel(level)
