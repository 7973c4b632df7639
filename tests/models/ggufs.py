"""Tiny synthetic GGUF files (metadata and one small tensor, no real weights) for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOKENS = ["<unk>", "<s>", "</s>", "<|eot_id|>", "hello", "world"]
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"


def write_gguf(path: Path, *, chat_template: str | None = TEMPLATE, arch: str = "llama") -> Path:
    from gguf import GGUFWriter, LlamaFileType

    writer = GGUFWriter(str(path), arch)
    writer.add_name("Tiny Test")
    writer.add_context_length(4096)
    writer.add_file_type(LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(TOKENS)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_eot_token_id(3)
    writer.add_add_bos_token(True)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.arange(24, dtype=np.float32).reshape(6, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
