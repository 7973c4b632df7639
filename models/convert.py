"""GGUF → Hugging Face folder (config.json, bf16 safetensors, tokenizer), offline.

vLLM cannot load the Gemma 3 GGUF, so the GPU path serves a Hugging Face folder converted from the
same file that llama.cpp serves. The conversion undoes what llama.cpp's ``convert_hf_to_gguf.py``
did to Gemma 3 and restores what it left implicit:

- every ``*norm.weight`` was stored as ``1 + w`` (Gemma's RMSNorm multiplies by ``1 + w``): 1 is
  subtracted again;
- ``lm_head`` is tied to ``token_embd`` (no ``output.weight`` in the file): the config says
  ``tie_word_embeddings`` and no ``lm_head`` tensor is written;
- Gemma 3's local/global attention layout (5 sliding-window layers, then 1 global) and the
  local rope base (10,000) are hard-coded in llama.cpp, not stored in the file: the config
  spells them out;
- Q/K were not permuted (Gemma uses NeoX-style rope in llama.cpp), so none is undone;
- the tokenizer is rebuilt from the GGUF vocabulary and must add BOS (token 2).

Quantized tensors are dequantized with the ``gguf`` package (llama.cpp's own reader) to float32,
then rounded to bf16. The folder gets a ``MANIFEST.sha256`` (one line per file) that
``models.store.verify_model`` checks. Conversion is deterministic: the same GGUF gives the same
bytes.

Usage: ``python -m models.convert GGUF OUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models.digest import write_manifest

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
# Gemma 3 facts llama.cpp hard-codes instead of storing them in the GGUF.
GEMMA3_SLIDING_WINDOW_PATTERN = 6
GEMMA3_LOCAL_ROPE_THETA = 10_000.0
GEMMA3_END_OF_TURN = 106

# GGUF per-layer tensor name → Hugging Face name (``{i}`` is the layer index).
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}

# Gemma's turn format (the same as models.chat_templates "gemma"), for tools that read the folder.
_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set sys = namespace(text='') %}"
    "{% for m in messages %}{% if m['role'] in ['system', 'developer'] %}"
    "{% set sys.text = sys.text + m['content'] + '\n\n' %}{% endif %}{% endfor %}"
    "{% for m in messages %}{% if m['role'] not in ['system', 'developer'] %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% if role == 'user' and sys.text %}{{ sys.text }}{% set sys.text = '' %}{% endif %}"
    "{{ m['content'] + '<end_of_turn>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


class ConversionError(RuntimeError):
    """The GGUF is not a model this converter knows, or a tensor is missing or misshapen."""


def _field(reader, key: str):  # noqa: ANN001 - gguf.GGUFReader
    field = reader.fields.get(key)
    if field is None:
        raise ConversionError(f"GGUF has no metadata key {key!r}")
    return field.contents()


def gemma3_config(reader) -> dict:  # noqa: ANN001 - gguf.GGUFReader
    """The ``config.json`` of a Gemma 3 text model: GGUF metadata plus llama.cpp's constants."""
    arch = _field(reader, "general.architecture")
    if arch != "gemma3":
        raise ConversionError(f"only gemma3 GGUF files convert; this one is {arch!r}")
    from transformers import Gemma3TextConfig

    layers = int(_field(reader, "gemma3.block_count"))
    head_dim = int(_field(reader, "gemma3.attention.key_length"))
    layer_types = [
        "full_attention" if (i + 1) % GEMMA3_SLIDING_WINDOW_PATTERN == 0 else "sliding_attention"
        for i in range(layers)
    ]
    config = Gemma3TextConfig(
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        hidden_size=int(_field(reader, "gemma3.embedding_length")),
        intermediate_size=int(_field(reader, "gemma3.feed_forward_length")),
        num_hidden_layers=layers,
        num_attention_heads=int(_field(reader, "gemma3.attention.head_count")),
        num_key_value_heads=int(_field(reader, "gemma3.attention.head_count_kv")),
        head_dim=head_dim,
        # llama.cpp scales queries by 1/sqrt(head_dim) for Gemma 3.
        query_pre_attn_scalar=head_dim,
        rms_norm_eps=float(_field(reader, "gemma3.attention.layer_norm_rms_epsilon")),
        max_position_embeddings=int(_field(reader, "gemma3.context_length")),
        sliding_window=int(_field(reader, "gemma3.attention.sliding_window")),
        layer_types=layer_types,
        rope_parameters={
            "full_attention": {
                "rope_type": "default",
                "rope_theta": float(_field(reader, "gemma3.rope.freq_base")),
            },
            "sliding_attention": {"rope_type": "default", "rope_theta": GEMMA3_LOCAL_ROPE_THETA},
        },
        bos_token_id=int(_field(reader, "tokenizer.ggml.bos_token_id")),
        eos_token_id=int(_field(reader, "tokenizer.ggml.eos_token_id")),
        pad_token_id=int(_field(reader, "tokenizer.ggml.padding_token_id")),
        tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh",
    )
    raw = config.to_dict()
    raw["architectures"] = ["Gemma3ForCausalLM"]
    raw["dtype"] = "bfloat16"
    raw.pop("transformers_version", None)  # keep the bytes independent of the local version
    return raw


def hf_name(gguf_name: str) -> str:
    """Map one GGUF tensor name (``blk.3.attn_q.weight``) to its Hugging Face name."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
    raise ConversionError(f"unknown GGUF tensor {gguf_name!r}")


def dequantized_tensors(reader) -> Iterator[tuple[str, np.ndarray]]:  # noqa: ANN001
    """(HF name, float32 array in HF layout) for every tensor; norms get their ``+ 1`` removed."""
    from gguf.quants import dequantize

    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        # GGUF shapes are reversed (ne0 first); dequantize returns numpy (rows, cols) order.
        values = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        values = values.reshape([int(d) for d in reversed(tensor.shape)])
        if name.endswith("norm.weight"):
            values = values - np.float32(1.0)
        yield name, values


def write_weights(reader, path: Path) -> None:  # noqa: ANN001
    import torch
    from safetensors.torch import save_file

    tensors = {
        name: torch.from_numpy(values).to(torch.bfloat16)
        for name, values in dequantized_tensors(reader)
    }
    if "lm_head.weight" in tensors:
        raise ConversionError("unexpected untied lm_head in a Gemma 3 GGUF")
    save_file(tensors, str(path), metadata={"format": "pt"})


def write_tokenizer(gguf_path: Path, out: Path) -> None:
    """Rebuild the tokenizer from the GGUF vocabulary; it adds BOS, as llama.cpp does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    if tok.bos_token_id != 2 or not getattr(tok, "add_bos_token", False):
        raise ConversionError("the rebuilt tokenizer must add BOS (token 2), as Gemma expects")
    tok.chat_template = _CHAT_TEMPLATE
    tok.save_pretrained(str(out))
    config_path = out / "tokenizer_config.json"
    cfg = json.loads(config_path.read_text())
    cfg["add_bos_token"] = True
    cfg["add_eos_token"] = False
    cfg.pop("transformers_version", None)
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def convert(gguf_path: Path, out_dir: Path) -> Path:
    """Write the Hugging Face folder for ``gguf_path`` at ``out_dir`` (replaced atomically)."""
    from gguf import GGUFReader

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    reader = GGUFReader(str(gguf_path))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir.parent))
    try:
        folder = staging / "model"
        folder.mkdir()
        config = gemma3_config(reader)
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        generation = {
            "bos_token_id": config["bos_token_id"],
            "eos_token_id": [config["eos_token_id"], GEMMA3_END_OF_TURN],
            "pad_token_id": config["pad_token_id"],
        }
        (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        write_weights(reader, folder / WEIGHTS_FILE)
        write_tokenizer(gguf_path, folder)
        write_manifest(folder)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(folder, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("converted %s to %s", gguf_path, out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    convert(args.gguf, args.out)


if __name__ == "__main__":
    main()
