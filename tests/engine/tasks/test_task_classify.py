"""The embedding classifier on real MiniLM embeddings: predicts, abstains, serializes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from engine.errors import InvalidRequestError, UnprocessableError
from engine.tasks import classify as cls
from tests.docfixtures import embedder
from tests.engine.tasks.fixtures_tasks import (
    IN_SCOPE_PROBES,
    OUT_OF_SCOPE_PROBES,
    ScriptedLLM,
    examples,
)


def embed(texts: list[str]) -> np.ndarray:
    return asyncio.run(embedder().embed(texts))


@pytest.fixture(scope="module")
def trained() -> cls.Classifier:
    data = examples()
    return cls.train("intents", data, embed([e.text for e in data]))


def predict(model: cls.Classifier, texts: list[str], top_k: int | None = None):
    return model.predict(texts, model.probabilities(texts, embed(texts)), top_k)


def test_predicts_in_scope_and_scores_sum_to_one(trained: cls.Classifier) -> None:
    texts = list(IN_SCOPE_PROBES)
    for text, pred in zip(texts, predict(trained, texts), strict=True):
        assert pred.label == IN_SCOPE_PROBES[text], (text, pred)
        assert not pred.abstained
        assert abs(sum(pred.scores.values()) - 1.0) < 1e-4
        assert pred.confidence == max(pred.scores.values())


def test_threshold_chosen_on_held_back_examples(trained: cls.Classifier) -> None:
    assert 0.0 < trained.threshold < 1.0
    assert trained.metrics["heldout_examples"] == len(examples())
    assert trained.metrics["heldout_accuracy"] >= 0.8
    assert trained.head is not None and trained.head.temperature > 0


def test_abstains_on_out_of_scope(trained: cls.Classifier) -> None:
    preds = predict(trained, OUT_OF_SCOPE_PROBES)
    assert sum(p.abstained for p in preds) >= 2, [p.confidence for p in preds]
    for p in preds:
        if p.abstained:
            assert p.label is None and p.confidence < trained.threshold


def test_rules_back_up_an_abstention(trained: cls.Classifier) -> None:
    ruled = cls.Classifier(
        **{**trained.__dict__, "threshold": 1.01, "rules": (cls.Rule("shipping", r"\bparcel\b"),)}
    )
    got = predict(ruled, ["a parcel question", "what is love"])
    assert got[0].label == "shipping" and got[0].source == "rule" and not got[0].abstained
    assert got[1].abstained and got[1].label is None


def test_top_k_limits_scores(trained: cls.Classifier) -> None:
    pred = predict(trained, ["my card was charged twice"], top_k=2)[0]
    assert len(pred.scores) == 2 and pred.label in pred.scores


def test_serialization_round_trip(trained: cls.Classifier) -> None:
    again = cls.Classifier.from_bytes(trained.to_bytes())
    texts = list(IN_SCOPE_PROBES) + OUT_OF_SCOPE_PROBES
    e = embed(texts)
    assert np.allclose(trained.probabilities(texts, e), again.probabilities(texts, e), atol=1e-6)
    assert again.threshold == trained.threshold and again.labels == trained.labels


def test_encoder_is_recorded_and_other_sized_embeddings_are_a_clear_error() -> None:
    data = examples()
    model = cls.train("intents", data, embed([e.text for e in data]), encoder="all-minilm-l6-v2")
    again = cls.Classifier.from_bytes(model.to_bytes())
    assert again.encoder == "all-minilm-l6-v2"
    texts = list(IN_SCOPE_PROBES)
    with pytest.raises(UnprocessableError, match="384-dimensional") as err:
        again.probabilities(texts, np.zeros((len(texts), 768), np.float32))
    assert err.value.code == "embedding_model_mismatch"


def test_classifier_stored_before_encoders_were_recorded_is_minilm(
    trained: cls.Classifier,
) -> None:
    import io
    import json

    blob = io.BytesIO(trained.to_bytes())
    with np.load(blob) as data:
        arrays = dict(data)
    meta = json.loads(arrays["meta"].tobytes())
    del meta["encoder"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    assert cls.Classifier.from_bytes(out.getvalue()).encoder == cls.LEGACY_ENCODER
    llm = cls.llm_classifier("x", ["a", "b"], {})
    assert cls.Classifier.from_bytes(llm.to_bytes()).encoder is None  # it embeds nothing


def test_given_threshold_is_kept() -> None:
    data = examples()
    model = cls.train("x", data, embed([e.text for e in data]), abstain_threshold=0.42)
    assert model.threshold == 0.42


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ([], "examples"),
        ([cls.Example("a", "x"), cls.Example("b", "x")], "examples"),
        ([cls.Example(" ", "x"), cls.Example("b", "y")], "examples[0].text"),
        ([cls.Example("a", ""), cls.Example("b", "y")], "examples[].label"),
    ],
)
def test_bad_examples_name_the_field(data: list[cls.Example], param: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        cls.train("x", data, np.zeros((len(data), 384), dtype=np.float32))
    assert err.value.param == param


def test_one_example_per_label_trains_without_held_back() -> None:
    data = [cls.Example("refund my money", "refund"), cls.Example("where is my box", "shipping")]
    model = cls.train("tiny", data, embed([e.text for e in data]))
    assert model.threshold == 0.0 and "heldout_accuracy" not in model.metrics
    assert predict(model, ["I want my money back"])[0].label == "refund"


def test_llm_path_normalizes_label_scores() -> None:
    model = cls.llm_classifier("llm", ["Sales", "Support"], {"Sales": "buying"})
    llm = ScriptedLLM(preferred="Support")
    probs, tokens = asyncio.run(cls.llm_probabilities(llm, ["help!"], model.labels, {}))
    assert probs.shape == (1, 2) and abs(probs.sum() - 1.0) < 1e-9 and tokens > 0
    pred = model.predict(["help!"], probs)[0]
    assert pred.label == "Support" and pred.source == "llm"
    assert pred.confidence == pytest.approx(1 / (1 + np.exp(-3.0)))


def test_choice_prompt_lists_labels_and_descriptions() -> None:
    prompt = cls.choice_prompt("hi\nthere", ["A", "B"], {"A": "first"})
    assert (
        "- A: first" in prompt
        and "- B" in prompt
        and prompt.endswith("Message: hi there\nCategory:")
    )


def test_database_from_before_encoders_upgrades_and_reads_minilm(
    tmp_path, trained: cls.Classifier
) -> None:
    from engine.storage import MIGRATIONS, MigrationRegistry, open_store
    from engine.tasks.store import TaskRepo

    older = MigrationRegistry()
    older.register_all([m for m in MIGRATIONS.ordered() if (m.module, m.version) != ("tasks", 2)])
    db = open_store(tmp_path / "h.duckdb", registry=older)
    db.store.execute(
        "INSERT INTO task_classifiers (tenant_id, name, version, method, labels, threshold, "
        "metrics, model) VALUES ('default', 'old', 1, 'embedding', '[\"a\"]', 0.5, '{}', ?)",
        [trained.to_bytes()],
    )
    db.close()
    db = open_store(tmp_path / "h.duckdb")  # applies tasks v2: the encoder column
    assert db.store.schema_versions()["tasks"] == 2
    repo = TaskRepo(db.store)
    assert repo.get_classifier("default", "old", None).encoder == cls.LEGACY_ENCODER
    row = repo.save_classifier("default", "new", "llm", ["a"], 0.0, {}, b"x", None)
    assert row.encoder is None and row.to_dict()["encoder"] is None
    db.close()
