"""Check a converted Hugging Face folder against llama.cpp on the GGUF it came from.

Both runtimes read the same token ids: for each fixed prompt, llama.cpp decodes a greedy
continuation of ``n_tokens`` keeping the logits of every position (``logits_all=True``);
transformers computes the logits of the same prompt + continuation in one forward pass in float32.
At each of the ``n_tokens`` predicting positions we compare the two log-softmax distributions.

Stated tolerance (``Tolerance``): llama.cpp computes with the quantized weights (activations
rounded to 8 bits for the K-quant dot products) while the folder holds the dequantized weights in
bf16, so the logits cannot be equal. The tolerance: the top-1 token agrees at >= 95% of the
positions, every disagreement is a near tie (llama.cpp's own top-2 margin under 0.5 nat), and the
mean KL(llama.cpp || hf) is at most 0.01 nat. Measured on Gemma 3 270M Q4_K_M (20 prompts x 32
positions): 96.3% agreement, largest disagreement margin 0.36 nat, mean KL 0.0043 (max 0.095).
A conversion with one of the usual bugs (norms not shifted back, wrong rope base, no BOS) misses
these by orders of magnitude (see tests/models/test_convert.py).

Usage: ``python -m models.verify_conversion GGUF HF_DIR`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Twenty fixed prompts: prose, code, lists, numbers, other scripts, chat markup.
PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    ",
    "Photosynthesis is the process by which",
    "1, 2, 3, 5, 8, 13,",
    "The quick brown fox",
    "In 1969, the first humans",
    "<start_of_turn>user\nWhat is the boiling point of water?<end_of_turn>\n<start_of_turn>model\n",
    "import numpy as np\n\n# compute the mean of an array\n",
    "Le chat est assis sur",
    "The three primary colors are",
    "SELECT name, email FROM users WHERE",
    "Dear Sir or Madam,\n\nI am writing to",
    "Water is made of hydrogen and",
    "A list of fruits:\n- apple\n- banana\n-",
    '{"name": "Alice", "age":',
    "The theory of relativity was developed by",
    "東京は日本の",
    "To make a cup of tea, first",
    "The largest planet in our solar system is",
)


@dataclass(frozen=True)
class Tolerance:
    min_top1_agreement: float = 0.95
    max_tie_margin: float = 0.5  # nats; a disagreement is allowed only below this llama.cpp margin
    max_mean_kl: float = 0.01


@dataclass(frozen=True)
class Report:
    prompts: int
    positions: int
    top1_agreement: float
    max_disagreement_margin: float
    mean_kl: float
    max_kl: float
    greedy_prefix_match: float  # fraction of prompts whose 32 greedy tokens match entirely

    def passes(self, tol: Tolerance) -> bool:
        return (
            self.top1_agreement >= tol.min_top1_agreement
            and self.max_disagreement_margin < tol.max_tie_margin
            and self.mean_kl <= tol.max_mean_kl
        )


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class LlamaCppReference:
    """llama.cpp on the GGUF: tokenization, greedy continuation, teacher-forced logits."""

    def __init__(self, gguf: Path, n_ctx: int = 160, n_threads: int = 2):
        import llama_cpp

        self.llm = llama_cpp.Llama(
            str(gguf), n_ctx=n_ctx, n_threads=n_threads, logits_all=True, verbose=False
        )

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=True, special=True)

    def greedy_with_logits(self, tokens: list[int], n_tokens: int) -> tuple[list[int], np.ndarray]:
        """Greedy continuation, and the logits of every position of prompt + continuation.

        One incremental pass: row i of the (len(tokens) + n_tokens - 1, vocab) float32 logits
        predicts token i + 1; the continuation is the argmax of each row past the prompt.
        """
        self.llm.reset()
        self.llm.eval(tokens)
        out: list[int] = []
        for _ in range(n_tokens):
            token = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(token)
            if len(out) < n_tokens:
                self.llm.eval([token])
        n = len(tokens) + n_tokens - 1
        return out, np.array(self.llm.scores[:n], dtype=np.float32)


class HFCandidate:
    """transformers on the converted folder, computed in float32 from the bf16 weights."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        self.model.eval()

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def logits(self, tokens: list[int], keep: int) -> np.ndarray:
        """(keep, vocab) float32: the logits of the last ``keep`` positions."""
        with self.torch.inference_mode():
            ids = self.torch.tensor([tokens])
            return self.model(ids, logits_to_keep=keep).logits[0].float().numpy()


def compare(reference: LlamaCppReference, candidate: HFCandidate, n_tokens: int = 32) -> Report:
    agree, positions, kls, margins, full = 0, 0, [], [0.0], 0
    for prompt in PROMPTS:
        tokens = reference.tokenize(prompt)
        if candidate.tokenize(prompt) != tokens:
            raise AssertionError(f"tokenizers disagree on {prompt!r}")
        continuation, ref_logits = reference.greedy_with_logits(tokens, n_tokens)
        seq = tokens + continuation
        # Rows len(tokens)-1 ... len(seq)-2 predict the continuation.
        rows = slice(len(tokens) - 1, len(seq) - 1)
        ref = _log_softmax(ref_logits[rows])
        cand = _log_softmax(candidate.logits(seq[:-1], keep=n_tokens))
        ref_top, cand_top = ref.argmax(-1), cand.argmax(-1)
        matched = ref_top == cand_top
        agree += int(matched.sum())
        positions += len(matched)
        full += int(matched.all())
        kls.extend((np.exp(ref) * (ref - cand)).sum(-1).tolist())
        top2 = np.sort(ref, axis=-1)[:, -2:]
        margins.extend((top2[~matched, 1] - top2[~matched, 0]).tolist())
    return Report(
        prompts=len(PROMPTS),
        positions=positions,
        top1_agreement=agree / positions,
        max_disagreement_margin=max(margins),
        mean_kl=float(np.mean(kls)),
        max_kl=float(max(kls)),
        greedy_prefix_match=full / len(PROMPTS),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="verify a GGUF → HF conversion against llama.cpp")
    parser.add_argument("gguf", type=Path)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    report = compare(LlamaCppReference(args.gguf), HFCandidate(args.folder), args.tokens)
    ok = report.passes(Tolerance())
    print(json.dumps({**asdict(report), "passes": ok}))  # the script's one result line
    raise SystemExit(0 if ok and not math.isnan(report.mean_kl) else 1)


if __name__ == "__main__":
    main()
