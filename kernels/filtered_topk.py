"""Tenant- and metadata-filtered exact top-k inner-product search, in one pass over the matrix.

faiss-gpu has no metadata filters: filtering after the search loses results (the top k of the
whole index may hold none of a tenant's rows), and a per-tenant index multiplies memory. This
kernel reads the embedding matrix once, scores a block of queries against a block of rows with
one ``tl.dot``, drops rows whose tenant differs from the query's or whose metadata bits lack the
query's required bits, and keeps each block's best ``k`` per query. A final ``torch.topk`` over the
``n_blocks * k`` survivors per query gives the answer: exact, not approximate.

Contract (both functions):
- ``queries`` (m, d) float32, ``embeddings`` (n, d) float32, row-major, on the same device;
- ``row_tenants`` (n,) int32, ``row_meta`` (n,) int32 bit set per row;
- ``query_tenants`` (m,) int32, ``query_required`` (m,) int32: a row matches query i when
  ``row_tenants == query_tenants[i]`` and ``row_meta & query_required[i] == query_required[i]``;
- returns ``scores`` (m, k) float32, best first, and ``indices`` (m, k) int64; slots beyond the
  number of matching rows hold ``-inf`` and ``-1``. Ties may come back in either order.

``filtered_topk_reference`` is the plain PyTorch version (matmul + mask + topk) the kernel is
tested and benchmarked against. Triton is imported lazily: only where the kernel runs (a CUDA
GPU, or ``TRITON_INTERPRET=1`` on CPU for tests).
"""

from __future__ import annotations

import functools
import os

import torch

# Largest k the kernel supports (each block keeps k candidates per query, unrolled).
MAX_K = 64


def filtered_topk_reference(
    queries: torch.Tensor,
    embeddings: torch.Tensor,
    row_tenants: torch.Tensor,
    row_meta: torch.Tensor,
    query_tenants: torch.Tensor,
    query_required: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch: full (m, n) score matrix, mask, ``torch.topk``."""
    scores = queries @ embeddings.T  # (m, n)
    tenant_ok = row_tenants[None, :] == query_tenants[:, None]
    meta_ok = (row_meta[None, :] & query_required[:, None]) == query_required[:, None]
    scores = scores.masked_fill(~(tenant_ok & meta_ok), float("-inf"))
    k_eff = min(k, scores.shape[1])
    top, idx = torch.topk(scores, k_eff, dim=1)
    idx = idx.masked_fill(torch.isinf(top), -1)
    return _pad(top, idx, k)


def _pad(top: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    missing = k - top.shape[1]
    if missing > 0:
        m = top.shape[0]
        top = torch.cat([top, top.new_full((m, missing), float("-inf"))], dim=1)
        idx = torch.cat([idx, idx.new_full((m, missing), -1)], dim=1)
    return top, idx.to(torch.int64)


def triton_available() -> bool:
    """True where the Triton kernel can run: a CUDA device, or the interpreter on CPU."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def filtered_block_topk(
        q_ptr, e_ptr, rt_ptr, rm_ptr, qt_ptr, qr_ptr, out_s_ptr, out_i_ptr,
        m, n, d, n_blocks,
        K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        qs = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query rows
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) matrix rows
        q_in, r_in = qs < m, rows < n
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, d, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            c_in = cols < d
            q = tl.load(q_ptr + qs[:, None] * d + cols[None, :], q_in[:, None] & c_in[None, :], 0.0)
            e = tl.load(
                e_ptr + rows[:, None] * d + cols[None, :], r_in[:, None] & c_in[None, :], 0.0
            )
            acc += tl.dot(q, tl.trans(e), input_precision="ieee")  # (BLOCK_M, BLOCK_N)
        r_tenant = tl.load(rt_ptr + rows, r_in, -1)
        r_meta = tl.load(rm_ptr + rows, r_in, 0)
        q_tenant = tl.load(qt_ptr + qs, q_in, -2)
        q_req = tl.load(qr_ptr + qs, q_in, 0)
        ok = (r_tenant[None, :] == q_tenant[:, None]) & (
            (r_meta[None, :] & q_req[:, None]) == q_req[:, None]
        )
        scores = tl.where(ok & r_in[None, :], acc, float("-inf"))
        lanes = tl.arange(0, BLOCK_N)
        out = (qs * n_blocks + pid_n) * K  # (BLOCK_M,) first candidate slot per query
        for j in tl.static_range(K):
            best = tl.max(scores, axis=1)  # (BLOCK_M,)
            arg = tl.argmax(scores, axis=1)
            found = best > float("-inf")
            tl.store(out_s_ptr + out + j, best, q_in)
            tl.store(out_i_ptr + out + j, tl.where(found, pid_n * BLOCK_N + arg, -1), q_in)
            scores = tl.where(lanes[None, :] == arg[:, None], float("-inf"), scores)

    return filtered_block_topk


def filtered_topk(
    queries: torch.Tensor,
    embeddings: torch.Tensor,
    row_tenants: torch.Tensor,
    row_meta: torch.Tensor,
    query_tenants: torch.Tensor,
    query_required: torch.Tensor,
    k: int,
    *,
    block_m: int = 16,
    block_n: int = 128,
    block_d: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel (see the module contract); ``1 <= k <= MAX_K``."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    m, d = queries.shape
    n = embeddings.shape[0]
    if embeddings.shape[1] != d:
        raise ValueError(f"queries have {d} dimensions, embeddings {embeddings.shape[1]}")
    queries, embeddings = queries.contiguous(), embeddings.contiguous()
    n_blocks = (n + block_n - 1) // block_n
    k_block = min(k, block_n)
    cand_s = torch.empty((m, n_blocks * k_block), dtype=torch.float32, device=queries.device)
    cand_i = torch.empty((m, n_blocks * k_block), dtype=torch.int32, device=queries.device)
    grid = ((m + block_m - 1) // block_m, n_blocks)
    _kernel()[grid](
        queries, embeddings,
        row_tenants.to(torch.int32).contiguous(), row_meta.to(torch.int32).contiguous(),
        query_tenants.to(torch.int32).contiguous(), query_required.to(torch.int32).contiguous(),
        cand_s, cand_i, m, n, d, n_blocks,
        K=k_block, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
    )  # fmt: skip
    k_eff = min(k, cand_s.shape[1])
    top, pos = torch.topk(cand_s, k_eff, dim=1)
    idx = torch.gather(cand_i, 1, pos).to(torch.int64)
    idx = idx.masked_fill(torch.isinf(top), -1)
    return _pad(top, idx, k)
