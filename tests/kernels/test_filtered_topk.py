"""The filtered top-k kernel against its PyTorch reference, over parametrized shapes.

Tolerances: scores agree within ``atol=1e-4, rtol=1e-5`` (both accumulate in float32, in a
different order); indices agree exactly wherever neighbouring scores differ by more than that
(a near tie may come back in either order).
"""

from __future__ import annotations

import pytest
import torch

from kernels.filtered_topk import MAX_K, filtered_topk, filtered_topk_reference

ATOL, RTOL = 1e-4, 1e-5


def _case(m: int, n: int, d: int, tenants: int, seed: int, device: str):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1)
    e = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    rt = torch.randint(0, tenants, (n,), generator=g, dtype=torch.int32)
    rm = torch.randint(0, 16, (n,), generator=g, dtype=torch.int32)
    qt = torch.randint(0, tenants, (m,), generator=g, dtype=torch.int32)
    qr = torch.tensor([[0, 1, 2, 4, 8, 3, 5, 15][i % 8] for i in range(m)], dtype=torch.int32)
    return [t.to(device) for t in (q, e, rt, rm, qt, qr)]


def _check(args, k: int) -> None:
    want_s, want_i = filtered_topk_reference(*args, k)
    got_s, got_i = filtered_topk(*args, k)
    assert got_s.shape == want_s.shape == (args[0].shape[0], k)
    assert got_i.dtype == torch.int64
    finite = torch.isfinite(want_s)
    assert torch.equal(finite, torch.isfinite(got_s))  # same number of matches per query
    torch.testing.assert_close(got_s[finite], want_s[finite], atol=ATOL, rtol=RTOL)
    assert torch.equal(got_i[~finite], want_i[~finite])  # -1 padding
    # Exact indices wherever the reference has no near tie around the slot.
    gaps = (want_s[:, :-1] - want_s[:, 1:]).abs()
    clear = torch.ones_like(finite)
    clear[:, :-1] &= gaps > 10 * ATOL
    clear[:, 1:] &= gaps > 10 * ATOL
    sel = clear & finite
    assert torch.equal(got_i[sel], want_i[sel])
    # Every returned row really matches its query's filter.
    _q, _e, rt, rm, qt, qr = args
    for row, (idx, ok) in enumerate(zip(got_i, finite, strict=True)):
        hits = idx[ok]
        assert torch.all(rt[hits] == qt[row])
        assert torch.all((rm[hits] & qr[row]) == qr[row])


@pytest.mark.parametrize(
    ("m", "n", "d", "tenants", "k"),
    [
        (1, 1, 8, 1, 1),  # a single row
        (3, 257, 384, 2, 10),  # MiniLM width, n not a multiple of the block
        (17, 300, 40, 3, 7),  # m past one query block, d not a multiple of block_d
        (5, 1000, 64, 50, 5),  # many tenants: fewer matches than k for some queries
        (4, 50, 16, 1, MAX_K),  # k larger than n: padded with -inf / -1
    ],
)
def test_matches_reference(device, m, n, d, tenants, k):
    _check(_case(m, n, d, tenants, seed=m * 1000 + n, device=device), k)


def test_query_with_no_matching_rows(device):
    q, e, rt, rm, qt, qr = _case(2, 100, 32, 2, seed=1, device=device)
    qt = torch.tensor([7, 0], dtype=torch.int32, device=device)  # tenant 7 owns nothing
    scores, idx = filtered_topk(q, e, rt, rm, qt, qr, 4)
    assert torch.all(torch.isinf(scores[0])) and torch.all(idx[0] == -1)
    assert torch.all(torch.isfinite(scores[1]))


@pytest.mark.parametrize("block_n", [16, 64, 256])
def test_block_size_does_not_change_the_answer(device, block_n):
    args = _case(6, 400, 48, 2, seed=3, device=device)
    want = filtered_topk(*args, 8, block_n=64)
    got = filtered_topk(*args, 8, block_n=block_n)
    torch.testing.assert_close(got[0], want[0], atol=ATOL, rtol=RTOL)


def test_rejects_bad_k(device):
    args = _case(1, 10, 8, 1, seed=0, device=device)
    with pytest.raises(ValueError, match="k must be"):
        filtered_topk(*args, 0)
    with pytest.raises(ValueError, match="k must be"):
        filtered_topk(*args, MAX_K + 1)
