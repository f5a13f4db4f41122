"""The fast rank-r factorisation used by LoRA extraction (merge_core/lora/lowrank.py): its Frobenius error
stays within 1.01 × the optimum (the truncated full SVD, torch.linalg.svd) on every kind of spectrum."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from merge_core.lora import lowrank
from merge_core.lora.lowrank import low_rank


def with_spectrum(m: int, n: int, s: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    u = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q
    return ((u * s[:k]) @ v.T).float()


def spectrum(kind: str, k: int) -> torch.Tensor:
    i = torch.arange(1, k + 1, dtype=torch.float64)
    return {"flat": torch.ones(k, dtype=torch.float64), "power0.5": i ** -0.5, "power1": i ** -1.0,
            "power2": i ** -2.0, "exp": torch.exp(-i / 20), "gap_before_rank": torch.where(i <= 20, 1.0, 0.3),
            "plateau_across_rank": torch.where(i <= 40, 1.0, 0.1),
            "small_gap_at_rank": torch.where(i <= 32, 1.0, 0.9)}[kind]  # slowest convergence


def errors(mat: torch.Tensor, rank: int) -> tuple:
    up, down = low_rank(mat, rank)
    assert up.shape == (mat.shape[0], min(rank, *mat.shape)) and down.shape == (up.shape[1], mat.shape[1])
    ours = torch.linalg.norm(mat.double() - (up @ down).double())
    s = torch.linalg.svdvals(mat.double())
    optimum = s[min(rank, *mat.shape):].pow(2).sum().sqrt()
    return float(ours), float(optimum), float(torch.linalg.norm(mat.double()))


def test_the_randomized_path_is_the_one_under_test(monkeypatch):
    # these shapes and ranks must not go to an exact SVD (thin or Gram), or the bounds below prove nothing
    calls = []
    real, gram = lowrank.exact_factors, lowrank.gram_factors
    monkeypatch.setattr(lowrank, "exact_factors", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(lowrank, "gram_factors", lambda *a: calls.append(a) or gram(*a))
    low_rank(torch.randn(256, 600), 32)
    low_rank(torch.randn(600, 256), 32)
    assert calls == []
    low_rank(torch.randn(100, 600), 32)  # small side: exact
    assert len(calls) == 1


@pytest.mark.parametrize("kind", ["flat", "power0.5", "power1", "power2", "exp", "gap_before_rank",
                                  "plateau_across_rank", "small_gap_at_rank"])
@pytest.mark.parametrize("shape", [(256, 600), (600, 256), (320, 320)])
def test_frobenius_error_within_one_percent_of_the_full_svd(kind, shape):
    mat = with_spectrum(*shape, spectrum(kind, min(shape)))
    ours, optimum, _ = errors(mat, 32)
    assert ours <= 1.01 * optimum


@settings(max_examples=30, deadline=None)
@given(m=st.integers(200, 420), n=st.integers(200, 420), rank=st.integers(1, 48),
       decay=st.floats(0.0, 2.5), knee=st.integers(1, 80), drop=st.floats(0.05, 1.0), seed=st.integers(0, 999))
def test_error_bound_holds_for_random_spectra(m, n, rank, decay, knee, drop, seed):
    k = min(m, n)
    i = torch.arange(1, k + 1, dtype=torch.float64)
    s = i ** -decay * torch.where(i <= knee, 1.0, drop)  # knee = rank with drop near 1 is the hard case
    ours, optimum, norm = errors(with_spectrum(m, n, s, seed), rank)
    assert ours <= 1.01 * optimum + 1e-6 * norm  # the additive part: float32 rounding when the optimum is ~0


@pytest.mark.parametrize("shape", [(300, 700), (700, 300), (40, 90)])
def test_an_exact_low_rank_matrix_is_recovered(shape):
    g = torch.Generator().manual_seed(3)
    mat = torch.randn(shape[0], 12, generator=g) @ torch.randn(12, shape[1], generator=g)
    up, down = low_rank(mat, 12)
    assert torch.linalg.norm(up @ down - mat) / torch.linalg.norm(mat) < 1e-5
    up, down = low_rank(mat, 20)  # a larger rank than the matrix has: the extra directions carry nothing
    assert torch.linalg.norm(up @ down - mat) / torch.linalg.norm(mat) < 1e-5


@pytest.mark.parametrize("route", [low_rank, lowrank.gram_factors, lowrank.exact_factors])
@pytest.mark.parametrize("shape", [(300, 500), (500, 300)])
def test_factors_have_kohya_form_up_is_u_times_s_and_down_has_orthonormal_rows(route, shape):
    # the 0.99-quantile clamp after this looks at both factors, so where S goes matters, on every route
    mat = with_spectrum(*shape, spectrum("power1", 300))
    up, down = route(mat, 24)
    assert up.dtype == down.dtype == mat.dtype
    assert torch.allclose(down @ down.T, torch.eye(24), atol=1e-4)
    s = torch.linalg.svdvals((up @ down).double())[:24].float()
    assert torch.allclose(up.norm(dim=0), s, rtol=1e-4)  # columns of U·S: the singular values, largest first


@pytest.mark.parametrize("shape", [(200, 900), (900, 200), (64, 64)])
def test_the_gram_route_is_the_exact_truncated_svd(shape):
    mat = with_spectrum(*shape, spectrum("power0.5", min(shape)), seed=7)
    up, down = lowrank.gram_factors(mat, 16)
    eu, ed = lowrank.exact_factors(mat, 16)
    assert torch.allclose(up @ down, eu @ ed, atol=1e-5)  # the same product (the factors' signs may differ)
    assert torch.allclose(up.norm(dim=0), torch.linalg.svdvals(mat.double())[:16].float(), rtol=1e-5)
    assert torch.allclose((up.abs() - eu.abs()).abs().max(), torch.tensor(0.0), atol=1e-4)
    up, down = lowrank.gram_factors(mat, 0)  # as the other routes: empty factors
    assert up.shape == (shape[0], 0) and down.shape == (0, shape[1])


def test_long_narrow_matrices_take_the_gram_route_and_square_ones_the_randomized(monkeypatch):
    calls = []
    real = lowrank.gram_factors
    monkeypatch.setattr(lowrank, "gram_factors", lambda *a: calls.append(a[0].shape) or real(*a))
    low_rank(torch.randn(640, 5760), 128)  # an SDXL 3×3 conv of 640 channels at the default rank
    low_rank(torch.randn(5120, 640), 128)  # an SDXL feed-forward layer
    low_rank(torch.randn(640, 640), 128)  # square: the randomized route
    assert calls == [(640, 5760), (5120, 640)]


def test_input_untouched_result_deterministic_and_zero_gives_zero():
    mat = torch.randn(300, 400)
    before = mat.clone()
    a = low_rank(mat, 16)
    b = low_rank(mat, 16)
    assert torch.equal(mat, before)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    up, down = low_rank(torch.zeros(300, 400), 16)
    assert torch.count_nonzero(up) == 0 and torch.isfinite(down).all()


def test_rank_is_capped_by_the_smaller_side():
    up, down = low_rank(torch.randn(8, 50), 64)
    assert up.shape == (8, 8) and down.shape == (8, 50)
