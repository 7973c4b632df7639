"""llama.cpp backend: one context, many sequences, continuous batching over llama_decode.

Each running sequence owns a *slot* (a llama.cpp sequence id). Every step builds one mixed batch:
one decode token per generating sequence first, then prompt chunks of admitted sequences within
``batch_tokens``. A sequence that finishes keeps its KV in its slot, so a later prompt with the
same prefix (a chat's earlier turns, a shared system prompt, the other choices of ``n``) skips
those tokens. Sampling runs in llama.cpp's sampler chains (C), per sequence, so a seeded sequence
samples the same whatever else is in the batch.

Threading: one thread (the step loop) owns the context; ``submit``/``abort`` only touch a locked
inbox. ctypes releases the GIL during ``llama_decode``, so grammar masks for the next token are
prepared in a small pool while the forward pass runs when a core is free for them; when llama.cpp's
threads take every core, masks are computed just after the forward pass, two at a time.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import llama_cpp as lc
import numpy as np

from engine.backends.base import Sink
from engine.types import (
    BackendOutput,
    BackendRequest,
    BackendStats,
    FinishReason,
    PromptLogprobs,
    SequenceFinished,
    TokenOutput,
    TopLogprob,
)
from models.store import model_path

if TYPE_CHECKING:
    from llguidance import LLTokenizer

    from configs import Settings
    from models import ModelCard

log = logging.getLogger(__name__)

# Reusing a cached prefix shorter than this is not worth evicting another slot's cache.
MIN_PREFIX_REUSE = 8
_backend_init = threading.Lock()
_backend_ready = False


@dataclass
class _Slot:
    """A llama.cpp sequence id and the tokens whose KV it holds (positions 0..len-1)."""

    seq_id: int
    cached: list[int] = field(default_factory=list)
    seq: _Seq | None = None
    last_used: float = 0.0
    salt: str = ""  # the cache salt (tenant) of the request whose KV ``cached`` is


@dataclass
class _Seq:
    req: BackendRequest
    slot: _Slot
    tokens: list[int]  # prompt + generated; tokens[:n_past] are in the KV cache
    n_prompt: int
    n_past: int = 0
    n_generated: int = 0
    sampler: ctypes.c_void_p | None = None  # None: plain greedy, the argmax of the logits row
    draft: list[int] = field(default_factory=list)  # tokens drafted into the current batch
    # Logits rows of the current batch: batch index -> prompt position (prompt logprobs) or -1.
    prompt_lp: list[float | None] = field(default_factory=list)
    prompt_top: list[tuple[TopLogprob, ...]] = field(default_factory=list)

    @property
    def prefilling(self) -> bool:
        return self.n_past < self.n_prompt

    @property
    def reserve(self) -> int:
        """KV cells this sequence may come to need."""
        return self.n_prompt + self.req.params.max_tokens


def _cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, settings: Settings, card: ModelCard):
        self.settings = settings
        self.card = card
        cfg = settings.llm
        self._n_slots = cfg.max_running
        self._batch_tokens = cfg.batch_tokens
        self._max_model_len = min(cfg.max_model_len, card.context_length)
        self._invariant = cfg.batch_invariant
        # Batch-invariant: each slot has its own KV stream of max_model_len cells.
        self._kv_cells = (
            self._n_slots * self._max_model_len if self._invariant else cfg.kv_cells
        )
        self._lock = threading.Lock()
        self._inbox: deque[BackendRequest] = deque()
        self._aborts: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._waiting: deque[BackendRequest] = deque()
        self._running: dict[str, _Seq] = {}
        self._slots = [_Slot(i) for i in range(self._n_slots)]
        self._steps = 0
        self._prefix_hits = 0
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hearth-mask")
        # Grammar masks overlap the forward pass only when a core is left over: llama.cpp's
        # threads wait for each other at every op, so a mask that takes one of their cores stalls
        # them all. Otherwise masks are computed right after the decode, two at a time, as part
        # of choosing each sequence's token.
        self._overlap_masks = _cores() > cfg.n_threads
        self._piece_cache: dict[int, bytes] = {}
        self._draft_tokens = max(0, cfg.draft_tokens)
        self._drafted = 0
        self._accepted = 0
        self._model = self._ctx = self._vocab = None
        self._alive = False

    # ---- properties -----------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos_ids

    @property
    def bos_token_id(self) -> int | None:
        bos = lc.llama_vocab_bos(self._vocab)
        return bos if bos >= 0 else None

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    def grammar_tokenizer(self) -> LLTokenizer:
        """The llguidance tokenizer of the loaded vocabulary (engine.grammar compiles with it;
        takes 1-3 s). Valid while the model is loaded."""
        from llguidance.llamacpp import lltokenizer_from_vocab

        return lltokenizer_from_vocab(self._vocab, eos_token=sorted(self.eos_token_ids))

    # ---- lifecycle --------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model and create the context (no stepping yet)."""
        global _backend_ready
        if self._invariant:
            # ggml's tiled K-quant matmul takes over at >= 8 rows and rounds differently from the
            # per-row path; one path for every batch size keeps a sequence's logits independent of
            # its batch. Read once per process by ggml, so it must be set before the first decode.
            os.environ.setdefault("GGML_CPU_TILED_MM", "0")
        with _backend_init:
            if not _backend_ready:
                lc.llama_backend_init()
                lc.llama_log_set(_silent_log, ctypes.c_void_p(0))
                _backend_ready = True
        path = model_path(self.card, self.settings.models_dir)
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = 0
        # No repacked weight layouts: their GEMM/GEMV split depends on the batch size.
        mparams.use_extra_bufts = False
        self._model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load model file {path}")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self._n_vocab = lc.llama_vocab_n_tokens(self._vocab)
        self._eos_ids = frozenset(
            t for t in range(self._n_vocab) if lc.llama_vocab_is_eog(self._vocab, t)
        )
        cfg = self.settings.llm
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = self._kv_cells
        cparams.n_batch = self._batch_tokens
        cparams.n_ubatch = self._batch_tokens
        cparams.n_seq_max = self._n_slots
        cparams.n_threads = cfg.n_threads
        cparams.n_threads_batch = cfg.n_threads
        # Unified: any sequence may use any cell (cross-slot prefix copies). Per-sequence streams
        # keep each sequence's cells at the same indices whatever else runs, which makes ggml's
        # vectorized reductions over cells (softmax, KQV) give bit-identical results.
        cparams.kv_unified = not self._invariant
        cparams.swa_full = True  # keep full KV in sliding-window layers so prefixes stay reusable
        cparams.no_perf = True
        cparams.flash_attn_type = 0 if self._invariant else -1  # FA's tiling depends on batch
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create a context (kv_cells too large?)")
        self._mem = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(self._batch_tokens, 0, 1)
        log.info(
            "llama.cpp: %s loaded, vocab %d, %d slots, %d KV cells, %d threads",
            path.name, self._n_vocab, self._n_slots, self._kv_cells, cfg.n_threads,
        )

    def start(self, sink: Sink) -> None:
        if self._ctx is None:
            self.load()
        self._sink = sink
        self._alive = True
        self._thread = threading.Thread(target=self._loop, name="hearth-llamacpp", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._pool.shutdown(wait=True)
        for seq in list(self._running.values()):
            self._free_sampler(seq)
        self._running.clear()
        if self._ctx is not None:
            lc.llama_batch_free(self._batch)
            lc.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            lc.llama_model_free(self._model)
            self._model = None
        self._alive = False

    def is_stepping(self) -> bool:
        return self._alive and self._thread is not None and self._thread.is_alive()

    # ---- tokens -----------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (lc.llama_token * n_max)()
        n = lc.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_bos, parse_special)
        if n < 0:
            buf = (lc.llama_token * -n)()
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, -n, add_bos, parse_special)
        return list(buf[:n])

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._piece_cache.get(token_id)
        if piece is None:
            piece = self._piece(token_id, special=False)
            self._piece_cache[token_id] = piece
        return piece

    def token_text(self, token_id: int) -> str:
        return self._piece(token_id, special=True).decode("utf-8", errors="replace")

    def _piece(self, token_id: int, *, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = lc.llama_token_to_piece(self._vocab, token_id, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(self._vocab, token_id, buf, -n, 0, special)
        return buf.raw[:n]

    # ---- requests ---------------------------------------------------------------------------

    def submit(self, request: BackendRequest) -> None:
        with self._lock:
            self._inbox.append(request)
        self._wake.set()

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborts.add(request_id)
        self._wake.set()

    def stats(self) -> BackendStats:
        used = sum(len(s.cached) for s in self._slots)
        return BackendStats(
            running=len(self._running),
            waiting=len(self._waiting) + len(self._inbox),
            kv_cells_used=used,
            kv_cells_total=self._kv_cells,
            steps=self._steps,
            prefix_hit_tokens=self._prefix_hits,
            draft_tokens=self._drafted,
            draft_accepted=self._accepted,
        )

    # ---- the step loop ----------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                out: list[BackendOutput] = []
                self._take_inbox(out)
                self._admit(out)
                if self._running:
                    self._step(out)
                if out:
                    self._sink(out)
                if not self._running:
                    self._wake.wait(0.05)
                    self._wake.clear()
        except Exception:  # the loop must never die silently: readiness reports it
            log.exception("llama.cpp step loop crashed")
            self._alive = False
            raise

    def _take_inbox(self, out: list[BackendOutput]) -> None:
        with self._lock:
            self._waiting.extend(self._inbox)
            self._inbox.clear()
            aborts, self._aborts = self._aborts, set()
        if not aborts:
            return
        kept = deque(r for r in self._waiting if r.request_id not in aborts)
        for r in self._waiting:
            if r.request_id in aborts:
                out.append(SequenceFinished(r.request_id, FinishReason.ABORT))
        self._waiting = kept
        for rid in aborts & self._running.keys():
            self._finish(self._running[rid], FinishReason.ABORT, out, emit_token=None)

    def _admit(self, out: list[BackendOutput]) -> None:
        """Move waiting requests into free slots while KV reservations fit."""
        shared = not self._invariant  # per-slot streams always fit max_model_len
        while self._waiting and len(self._running) < self._n_slots:
            req = self._waiting[0]
            need = len(req.prompt_tokens) + req.params.max_tokens
            if shared and self._reserved() + need > self._kv_cells and self._running:
                return  # wait for a running sequence to finish
            if self._sibling_prefilling(req):
                return  # the same prompt is being prefilled: wait and share its KV
            self._waiting.popleft()
            try:
                self._running[req.request_id] = self._place(req)
            except Exception as exc:  # a bad request must not take the loop down
                log.exception("could not start sequence %s", req.request_id)
                out.append(SequenceFinished(req.request_id, FinishReason.ABORT, error=str(exc)))

    def _reserved(self) -> int:
        return sum(s.reserve for s in self._running.values())

    def _sibling_prefilling(self, req: BackendRequest) -> bool:
        if self._invariant:
            return False  # no copies across KV streams: nothing to wait for
        prompt = req.prompt_tokens
        for seq in self._running.values():
            if seq.req.cache_salt != req.cache_salt:
                continue  # another tenant's prompt: never shared, so never waited for
            if seq.prefilling and seq.tokens[: len(prompt)] == prompt and len(prompt) > 32:
                return True
        return False

    def _place(self, req: BackendRequest) -> _Seq:
        """Pick a slot, reuse the longest cached prefix, and build the sampler."""
        prompt = list(req.prompt_tokens)
        free = [s for s in self._slots if s.seq is None]
        # Longest common prefix with any slot's KV (free slots: take it; busy: copy from it).
        best, best_len = None, 0
        for slot in self._slots:
            if self._invariant and slot.seq is not None:
                continue  # no copies across KV streams: only a free slot's own cache is reused
            if slot.salt != req.cache_salt:
                continue  # another tenant's KV is never reused (nor its timing observable)
            held = slot.cached if slot.seq is None else slot.cached[: slot.seq.n_past]
            n = _common_prefix(held, prompt)
            if n > best_len:
                best, best_len = slot, n
        best_len = min(best_len, len(prompt) - 1)  # the last prompt token must run for logits
        if not self.settings.llm.prefix_cache:
            best, best_len = None, 0
        if best is not None and best.seq is None and best_len >= MIN_PREFIX_REUSE:
            slot = best
        else:
            slot = min(free, key=lambda s: (len(s.cached) > 0, s.last_used))
        reuse = 0
        if best is not None and best_len >= MIN_PREFIX_REUSE:
            if best is slot:
                reuse = best_len
            else:
                lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
                lc.llama_memory_seq_cp(self._mem, best.seq_id, slot.seq_id, 0, best_len)
                reuse = best_len
        lc.llama_memory_seq_rm(self._mem, slot.seq_id, reuse, -1)
        slot.cached = prompt[:reuse]
        slot.salt = req.cache_salt
        self._prefix_hits += reuse
        seq = _Seq(req=req, slot=slot, tokens=prompt, n_prompt=len(prompt), n_past=reuse)
        if req.params.prompt_logprobs:
            seq.n_past = 0  # prompt logprobs need logits at every prompt position
            lc.llama_memory_seq_rm(self._mem, slot.seq_id, 0, -1)
            slot.cached = []
        seq.sampler = self._make_sampler(req)
        slot.seq = seq
        return seq

    def _make_sampler(self, req: BackendRequest):
        """llama.cpp's sampler chain for the request; None for plain greedy (no bias, no
        penalties), which takes the argmax of the logits row instead: the chain would first copy
        all 262k logits into a candidate array."""
        p = req.params
        plain = not (p.logit_bias or p.repetition_penalty != 1.0 or p.presence_penalty
                     or p.frequency_penalty)
        if p.temperature <= 0.0 and plain:
            return None
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        add = lambda s: lc.llama_sampler_chain_add(chain, s)  # noqa: E731
        if p.logit_bias:
            arr = (lc.llama_logit_bias * len(p.logit_bias))()
            for i, (tok, bias) in enumerate(p.logit_bias.items()):
                arr[i].token, arr[i].bias = tok, bias
            add(lc.llama_sampler_init_logit_bias(self._n_vocab, len(p.logit_bias), arr))
        if p.repetition_penalty != 1.0:
            # Repetition penalty covers the prompt too (as vLLM's does): feed it the prompt.
            rep = lc.llama_sampler_init_penalties(
                self._n_vocab, self._max_model_len, p.repetition_penalty, 0.0, 0.0
            )
            for tok in req.prompt_tokens:
                lc.llama_sampler_accept(rep, tok)
            add(rep)
        if p.presence_penalty or p.frequency_penalty:
            # OpenAI's penalties count generated tokens only.
            add(
                lc.llama_sampler_init_penalties(
                    self._n_vocab,
                    max(p.max_tokens, 1),
                    1.0,
                    p.frequency_penalty,
                    p.presence_penalty,
                )
            )
        if p.temperature <= 0.0:
            add(lc.llama_sampler_init_greedy())
            return chain
        add(lc.llama_sampler_init_temp(p.temperature))
        if p.top_k > 0:
            add(lc.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            add(lc.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            add(lc.llama_sampler_init_min_p(p.min_p, 1))
        seed = secrets.randbits(32) if p.seed is None else p.seed % (1 << 32)
        add(lc.llama_sampler_init_dist(seed))
        return chain

    def _step(self, out: list[BackendOutput]) -> None:
        plan = self._build_batch()
        if not plan:
            return
        prep = (
            [
                self._pool.submit(s.req.constraint.prepare)
                for s, _, _, sample_idx in plan
                if sample_idx is not None and s.req.constraint is not None
            ]
            if self._overlap_masks
            else []
        )
        rc = lc.llama_decode(self._ctx, self._batch)
        for f in prep:
            f.exception()  # wait; errors surface again in mask_logits for that sequence
        self._steps += 1
        if rc != 0:
            self._decode_failed(rc, plan, out)
            return
        to_sample = []
        for seq, start, end, sample_idx in plan:
            seq.n_past = end
            seq.slot.cached = seq.tokens[:end]
            if seq.req.params.prompt_logprobs and start < seq.n_prompt:
                self._collect_prompt_logprobs(seq, start, end, out)
            if sample_idx is not None and seq.req.request_id in self._running:
                to_sample.append((seq, sample_idx))
        # Choosing a token over the 262k vocabulary costs ~2 ms a sequence and releases the GIL,
        # so sequences are sampled two at a time; the results are committed in batch order.
        if len(to_sample) > 1:
            # The first logits read after a decode reorders llama.cpp's output rows in place (and
            # clears the pending swaps); two threads doing it at once swap rows back and forth.
            # Do it once here, so the parallel reads below only read.
            lc.llama_get_logits(self._ctx)
            choices = list(self._pool.map(self._choose, to_sample))
        else:
            choices = [self._choose(item) for item in to_sample]
        for (seq, idx), choice in zip(to_sample, choices, strict=True):
            self._commit(seq, choice, out)
            if seq.draft:
                self._verify(seq, idx, out)

    # ---- prompt-lookup speculative decoding -------------------------------------------------

    def _propose(self, seq: _Seq, room: int) -> list[int]:
        """Draft tokens for ``seq``: what followed the latest earlier occurrence of its last
        3 (else 2, else 1) tokens in its prompt and output. Empty when nothing matches, when
        the sequence cannot use them (max_tokens, context) or wants prompt logprobs."""
        p = seq.req.params
        k = min(
            self._draft_tokens,
            room,
            p.max_tokens - seq.n_generated - 1,
            self._max_model_len - len(seq.tokens) - 1,
        )
        if k <= 0 or p.prompt_logprobs:
            return []
        return _lookup(seq.tokens, k)

    def _verify(self, seq: _Seq, first_row: int, out: list[BackendOutput]) -> None:
        """Walk the drafted rows after the sampled one: while the token just committed equals
        the drafted token fed at the next row, that row's logits are exactly what plain decoding
        would compute next, so the next token is chosen from it (same sampler, same grammar
        state, same RNG draw order). The first mismatch ends the walk; KV of rows past the
        accepted tokens is dropped."""
        draft, seq.draft = seq.draft, []
        self._drafted += len(draft)
        for i, tok in enumerate(draft):
            if seq.req.request_id not in self._running or seq.tokens[-1] != tok:
                break
            seq.n_past += 1  # the drafted token's KV row is the committed token's
            self._accepted += 1
            self._commit(seq, self._choose((seq, first_row + 1 + i)), out)
        lc.llama_memory_seq_rm(self._mem, seq.slot.seq_id, seq.n_past, -1)
        seq.slot.cached = seq.tokens[: seq.n_past]

    def _build_batch(self) -> list[tuple[_Seq, int, int, int | None]]:
        """Fill the batch: decode tokens first, then prompt chunks. Returns (seq, start, end,
        batch index to sample from or None)."""
        budget = self._batch_tokens
        spans = []
        for seq in sorted(self._running.values(), key=lambda s: s.prefilling):
            if budget <= 0:
                break
            start = seq.n_past
            end = min(len(seq.tokens), start + budget)
            seq.draft = []
            if end > start:
                if end == len(seq.tokens) and end - start == 1 and self._draft_tokens:
                    seq.draft = self._propose(seq, budget - 1)
                spans.append((seq, start, end))
                budget -= end - start + len(seq.draft)
        # Rows go in to the batch in KV-stream (slot) order: with per-sequence streams, llama.cpp
        # splits or permutes a batch whose sequences are out of stream order (measured: 8 decode
        # rows in reverse order take 2.2x as long as the same rows in order).
        spans.sort(key=lambda span: span[0].slot.seq_id)
        b = self._batch
        n = 0
        plan = []
        for seq, start, end in spans:
            want_all = seq.req.params.prompt_logprobs and start < seq.n_prompt
            last = len(seq.tokens) - 1
            for pos in range(start, end):
                b.token[n] = seq.tokens[pos]
                b.pos[n] = pos
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = seq.slot.seq_id
                b.logits[n] = 1 if (want_all or pos == last) else 0
                n += 1
            sample_idx = n - 1 if end == len(seq.tokens) else None
            for i, tok in enumerate(seq.draft):  # drafted rows follow the sampled row
                b.token[n] = tok
                b.pos[n] = end + i
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = seq.slot.seq_id
                b.logits[n] = 1
                n += 1
            plan.append((seq, start, end, sample_idx))
        b.n_tokens = n
        return plan

    def _decode_failed(self, rc: int, plan, out: list[BackendOutput]) -> None:
        if rc == 1 and self._evict_idle():
            log.warning("llama_decode: KV full, evicted idle prefix caches; retrying next step")
            for seq, start, _end, _ in plan:
                lc.llama_memory_seq_rm(self._mem, seq.slot.seq_id, start, -1)
            return
        log.error("llama_decode failed with %d; failing %d sequences", rc, len(plan))
        for seq, start, _end, _ in plan:
            lc.llama_memory_seq_rm(self._mem, seq.slot.seq_id, start, -1)
            error = f"decode failed ({rc})"
            self._finish(seq, FinishReason.ABORT, out, emit_token=None, error=error)

    def _evict_idle(self) -> bool:
        evicted = False
        for slot in self._slots:
            if slot.seq is None and slot.cached:
                lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
                slot.cached = []
                evicted = True
        return evicted

    def _logits(self, idx: int) -> np.ndarray:
        ptr = lc.llama_get_logits_ith(self._ctx, idx)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    def _choose(self, item: tuple[_Seq, int]) -> tuple[int, float | None, tuple] | Exception:
        """Pick the next token of one sequence. Touches only that sequence's own state (its
        sampler, its constraint, its row of logits), so sequences may be chosen in parallel."""
        seq, idx = item
        p = seq.req.params
        constraint = seq.req.constraint
        # ignore_eos and min_tokens cannot keep a finished structure going.
        eos_blocked = (p.ignore_eos or seq.n_generated < p.min_tokens) and not (
            constraint is not None and constraint.is_complete()
        )
        greedy = seq.sampler is None
        needs_view = p.logprobs is not None or constraint is not None or eos_blocked or greedy
        logprob, top = None, ()
        try:
            if needs_view:
                logits = self._logits(idx)
                if p.logprobs is not None:
                    lse = _logsumexp(logits)
                    top = _top_logprobs(logits, lse, p.logprobs)
                if constraint is not None:
                    constraint.mask_logits(logits)
                if eos_blocked:
                    for t in self._eos_ids:
                        logits[t] = -math.inf
            if greedy:  # the first maximum, as llama.cpp's greedy sampler picks
                token = int(np.argmax(logits))
            else:
                token = lc.llama_sampler_sample(seq.sampler, self._ctx, idx)
            if p.logprobs is not None:
                # Masks only set disallowed logits to -inf, so the sampled token's is still raw.
                logprob = float(logits[token] - lse)
            if constraint is not None:
                constraint.advance(token)
        except Exception as exc:  # reported by _commit, on the loop thread
            return exc
        return token, logprob, top

    def _commit(self, seq: _Seq, choice, out: list[BackendOutput]) -> None:
        if isinstance(choice, Exception):
            log.error("sampling failed for %s", seq.req.request_id, exc_info=choice)
            self._finish(seq, FinishReason.ABORT, out, emit_token=None, error=str(choice))
            return
        token, logprob, top = choice
        p = seq.req.params
        constraint = seq.req.constraint
        seq.tokens.append(token)
        seq.n_generated += 1
        reason = None
        if token in self._eos_ids and not p.ignore_eos or token in p.stop_token_ids:
            reason = FinishReason.STOP
        elif constraint is not None and constraint.is_complete():
            reason = FinishReason.STOP
        elif seq.n_generated >= p.max_tokens or len(seq.tokens) >= self._max_model_len:
            reason = FinishReason.LENGTH
        tok_out = TokenOutput(seq.req.request_id, token, logprob, top, reason)
        if reason is None:
            out.append(tok_out)
        else:
            self._finish(seq, reason, out, emit_token=tok_out)

    def _collect_prompt_logprobs(self, seq: _Seq, start: int, end: int, out) -> None:
        k = seq.req.params.logprobs or 0
        # Batch rows of this chunk come in order; row for position pos predicts token pos+1.
        first_row = self._row_of(seq, start)
        if start == 0:
            seq.prompt_lp.append(None)
            seq.prompt_top.append(())
        for i, pos in enumerate(range(start, min(end, seq.n_prompt - 1))):
            logits = self._logits(first_row + i)
            lse = _logsumexp(logits)
            nxt = seq.tokens[pos + 1]
            seq.prompt_lp.append(float(logits[nxt] - lse))
            seq.prompt_top.append(_top_logprobs(logits, lse, k) if k else ())
        if end >= seq.n_prompt:
            out.append(
                PromptLogprobs(seq.req.request_id, tuple(seq.prompt_lp), tuple(seq.prompt_top))
            )

    def _row_of(self, seq: _Seq, pos: int) -> int:
        b = self._batch
        for i in range(b.n_tokens):
            if b.seq_id[i][0] == seq.slot.seq_id and b.pos[i] == pos:
                return i
        raise RuntimeError("position not in batch")

    def _finish(self, seq, reason, out, *, emit_token: TokenOutput | None, error=None) -> None:
        self._running.pop(seq.req.request_id, None)
        self._free_sampler(seq)
        slot = seq.slot
        slot.seq = None
        slot.last_used = time.monotonic()
        slot.cached = seq.tokens[: seq.n_past]
        if emit_token is not None:
            out.append(emit_token)
        else:
            out.append(SequenceFinished(seq.req.request_id, reason, error=error))

    def _free_sampler(self, seq: _Seq) -> None:
        if seq.sampler is not None:
            lc.llama_sampler_free(seq.sampler)
            seq.sampler = None


def _lookup(tokens: list[int], k: int, ngram: int = 3) -> list[int]:
    """Up to ``k`` tokens that followed the latest earlier occurrence of the last ``ngram``
    (down to 1) tokens of ``tokens``."""
    n_tok = len(tokens)
    if n_tok < 2:
        return []
    arr = np.fromiter(tokens, dtype=np.int64, count=n_tok)
    for n in range(min(ngram, n_tok - 1), 0, -1):
        tail = arr[n_tok - n:]
        # Candidate starts i (i + n < n_tok: the match ends before the tail's own position).
        hits = np.flatnonzero(arr[: n_tok - n] == tail[0])
        for j in range(1, n):
            hits = hits[arr[hits + j] == tail[j]]
        if hits.size:
            i = int(hits[-1]) + n
            return arr[i : i + k].tolist()
    return []


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _logsumexp(x: np.ndarray) -> float:
    m = float(x.max())
    return m + math.log(float(np.exp(x - m).sum()))


def _top_logprobs(logits: np.ndarray, lse: float, k: int) -> tuple[TopLogprob, ...]:
    if k <= 0:
        return ()
    idx = np.argpartition(logits, -k)[-k:]
    idx = idx[np.argsort(-logits[idx])]
    return tuple(TopLogprob(int(i), float(logits[i] - lse)) for i in idx)


@lc.llama_log_callback
def _silent_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """Route llama.cpp's own log to ours: errors (ggml level 4) as warnings, the rest as debug."""
    msg = text.decode("utf-8", errors="replace").rstrip()
    if msg:
        log.log(logging.WARNING if level == 4 else logging.DEBUG, "llama.cpp: %s", msg)
