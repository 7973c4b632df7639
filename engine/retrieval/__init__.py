"""Retrieval: per-collection FAISS (dense) and BM25 (lexical) indexes, fused by RRF (hybrid)."""

from engine.retrieval.dense import DenseIndex, DenseParams, IndexFileError, gpu_available
from engine.retrieval.fusion import rrf
from engine.retrieval.lexical import LexicalIndex
from engine.retrieval.retriever import MODES, Hit, Retriever

__all__ = [
    "MODES",
    "DenseIndex",
    "DenseParams",
    "Hit",
    "IndexFileError",
    "LexicalIndex",
    "Retriever",
    "gpu_available",
    "rrf",
]
