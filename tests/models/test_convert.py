"""The GGUF → Hugging Face converter: names, config, determinism, and agreement with llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.cards import get_card
from models.convert import ConversionError, gemma3_config, hf_name
from models.store import ModelFileError, install_model, sha256_file, verify_model

MODELS_DIR = Path("data/models")
GGUF_CARD = get_card("gemma-3-270m-q4km")
HF_CARD = get_card("gemma-3-270m-bf16")


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    return install_model(GGUF_CARD, MODELS_DIR)


@pytest.fixture(scope="module")
def reader(gguf_path):
    from gguf import GGUFReader

    return GGUFReader(str(gguf_path))


def test_tensor_names_map_one_to_one(reader):
    names = [hf_name(t.name) for t in reader.tensors]
    assert len(names) == len(set(names)) == 236
    assert "model.embed_tokens.weight" in names and "model.norm.weight" in names
    assert "model.layers.17.self_attn.q_norm.weight" in names
    assert not any(n.startswith("lm_head") for n in names)  # tied to the embedding
    with pytest.raises(ConversionError, match="unknown GGUF tensor"):
        hf_name("blk.0.attn_qkv.weight")


def test_config_spells_out_what_llama_cpp_hard_codes(reader):
    config = gemma3_config(reader)
    assert config["model_type"] == "gemma3_text"
    assert config["tie_word_embeddings"] is True
    assert config["num_hidden_layers"] == 18 and config["head_dim"] == 256
    full = [i for i, t in enumerate(config["layer_types"]) if t == "full_attention"]
    assert full == [5, 11, 17]
    rope = config["rope_parameters"]
    assert rope["full_attention"]["rope_theta"] == 1_000_000.0
    assert rope["sliding_attention"]["rope_theta"] == 10_000.0
    assert config["sliding_window"] == 512 and config["query_pre_attn_scalar"] == 256
    assert config["bos_token_id"] == 2 and config["vocab_size"] == 262_144


def test_norms_are_shifted_back(reader):
    import numpy as np

    from models.convert import dequantized_tensors

    raw = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors[:20]}
    for name, values in dequantized_tensors(reader):
        if name == "model.norm.weight":
            np.testing.assert_allclose(values, raw["output_norm.weight"] - 1.0)
            return
    pytest.fail("model.norm.weight not produced")


@pytest.mark.slow
def test_installed_folder_matches_its_card_and_manifest():
    path = install_model(HF_CARD, MODELS_DIR)  # converts from the GGUF on first use
    assert verify_model(HF_CARD, MODELS_DIR) == path
    tok = json.loads((path / "tokenizer_config.json").read_text())
    assert tok["add_bos_token"] is True
    manifest = (path / "MANIFEST.sha256").read_text().splitlines()
    assert {line.split()[1] for line in manifest} >= {"config.json", "model.safetensors"}


@pytest.mark.slow
def test_conversion_is_deterministic_and_tamper_is_caught(tmp_path, gguf_path):
    from models.convert import convert

    out = convert(gguf_path, tmp_path / HF_CARD.file)
    assert sha256_file(out / "model.safetensors") == HF_CARD.sha256
    verify_model(HF_CARD, tmp_path)
    (out / "config.json").write_text((out / "config.json").read_text().replace("512", "4096"))
    with pytest.raises(ModelFileError, match="altered"):
        verify_model(HF_CARD, tmp_path)


@pytest.fixture(scope="module")
def compared(gguf_path):
    from models.verify_conversion import HFCandidate, LlamaCppReference

    folder = install_model(HF_CARD, MODELS_DIR)
    return LlamaCppReference(gguf_path), HFCandidate(folder)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_logits_agree_with_llama_cpp_within_tolerance(compared):
    """All 20 prompts, 8 positions each, to keep CI short (the full 32 is
    ``python -m models.verify_conversion``, which measured 96.3% top-1 agreement, largest
    disagreement margin 0.36 nat, mean KL 0.0043)."""
    from models.verify_conversion import PROMPTS, Tolerance, compare

    reference, candidate = compared
    report = compare(reference, candidate, n_tokens=8)
    assert report.prompts == len(PROMPTS) == 20 and report.positions == 20 * 8
    assert report.passes(Tolerance()), report


@pytest.mark.slow
def test_a_known_conversion_bug_fails_the_check(compared, monkeypatch):
    """Control: leaving Gemma's ``1 + w`` norms unshifted must fail the same tolerance."""
    import torch

    from models import verify_conversion
    from models.verify_conversion import Tolerance, compare

    reference, candidate = compared
    monkeypatch.setattr(verify_conversion, "PROMPTS", verify_conversion.PROMPTS[:3])
    with torch.no_grad():
        norms = [p for n, p in candidate.model.named_parameters() if n.endswith("norm.weight")]
        for p in norms:
            p.add_(1.0)
        try:
            report = compare(reference, candidate, n_tokens=8)
        finally:
            for p in norms:
                p.sub_(1.0)
    assert not report.passes(Tolerance())
    assert report.mean_kl > 10 * Tolerance().max_mean_kl


def test_tolerance_accepts_the_measured_conversion_and_rejects_each_miss():
    from models.verify_conversion import Report, Tolerance

    measured = Report(20, 640, 0.9625, 0.36, 0.0043, 0.095, 0.25)  # 20 x 32, see the module
    assert measured.passes(Tolerance())
    for field, bad in (("top1_agreement", 0.9), ("max_disagreement_margin", 2.0), ("mean_kl", 0.5)):
        worse = Report(**{**measured.__dict__, field: bad})
        assert not worse.passes(Tolerance()), field
