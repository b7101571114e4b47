"""The batched L-BFGS: each problem's own minimum, quasi-Newton speed on ill-conditioned problems, the box,
the iteration cap, problems that start converged or undefined, and kinks."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.optim import minimize_batched


def _quadratics(B: int, p: int, condition: float, seed: int = 0):
    """B problems 0.5 (x - c)' H (x - c), each H with eigenvalues from 1 to `condition` in a random basis."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((B, p, p)))[0]
    H = Q @ (np.geomspace(1, condition, p)[None, :, None] * np.swapaxes(Q, 1, 2))
    c = rng.normal(0, 2, (B, p))

    def fun(x: np.ndarray, rows: np.ndarray):
        d = x - c[rows]
        g = np.einsum("bij,bj->bi", H[rows], d)
        return 0.5 * np.einsum("bi,bi->b", d, g), g

    return fun, c, H


def test_ill_conditioned_quadratics_converge_at_quasi_newton_speed():
    """Steepest descent would need thousands of steps at condition 1e4; L-BFGS needs tens."""
    fun, c, _ = _quadratics(B=20, p=6, condition=1e4)
    res = minimize_batched(fun, np.zeros((20, 6)), max_iter=80)
    assert res.converged.all()
    assert np.allclose(res.x, c, atol=1e-5)
    assert res.n_iter.max() <= 80 and res.n_iter.min() >= 6
    f, _ = fun(res.x, np.arange(20))
    assert np.array_equal(res.fun, f)  # the objective at the returned point
    assert (res.fun < 1e-9).all()


def test_each_problem_keeps_its_own_memory():
    """Problems of very different scale advanced together reach their own minima as if solved alone."""
    fun, c, _ = _quadratics(B=8, p=4, condition=1e3, seed=1)
    together = minimize_batched(fun, np.zeros((8, 4)), max_iter=100)
    for i in range(8):
        alone = minimize_batched(
            lambda x, rows, i=i: fun(x, np.full(rows.size, i)), np.zeros((1, 4)), max_iter=100
        )
        assert together.n_iter[i] == alone.n_iter[0]
        assert np.allclose(together.x[i], alone.x[0])
    assert np.allclose(together.x, c, atol=1e-5)


def test_a_box_holds_the_variables_the_gradient_pushes_out():
    """Separable problem: the constrained minimum is the centre clipped into the box; a start outside the box
    is clipped into it first."""
    c = np.array([[2.0, -3.0, 0.5], [-0.2, 0.1, 9.0]])
    scale = np.array([1.0, 10.0, 100.0])

    def fun(x, rows):
        d = x - c[rows]
        return 0.5 * (scale * d * d).sum(axis=1), scale * d

    lo, hi = np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0])
    res = minimize_batched(fun, np.array([[5.0, 5.0, 5.0], [0.0, 0.0, 0.0]]), bounds=(lo, hi), max_iter=100)
    assert res.converged.all()
    assert np.allclose(res.x, np.clip(c, lo, hi), atol=1e-7)
    assert ((res.x >= lo) & (res.x <= hi)).all()


def test_the_iteration_cap_stops_a_problem_unconverged():
    fun, _, _ = _quadratics(B=3, p=6, condition=1e4, seed=2)
    res = minimize_batched(fun, np.zeros((3, 6)), max_iter=3)
    assert (res.n_iter == 3).all() and not res.converged.any()


def test_a_problem_at_its_minimum_does_not_move_and_an_undefined_one_is_left_alone():
    fun, c, _ = _quadratics(B=3, p=2, condition=10.0, seed=3)

    def guarded(x, rows):
        f, g = fun(x, rows)
        return np.where(rows == 2, np.nan, f), g

    x0 = np.vstack([c[0], np.zeros(2), np.zeros(2)])
    res = minimize_batched(guarded, x0, max_iter=50)
    assert res.n_iter[0] == 0 and res.converged[0] and np.array_equal(res.x[0], c[0])
    assert res.converged[1] and np.allclose(res.x[1], c[1], atol=1e-6)
    assert res.n_iter[2] == 0 and not res.converged[2] and np.array_equal(res.x[2], [0.0, 0.0])


def test_a_kink_stops_the_search_at_the_kink():
    """|x - 1/4| + x^2 has its minimum on a kink (no gradient there): the line search fails along steepest
    descent at working precision and the problem stops as converged instead of looping to the cap."""

    def fun(x, rows):
        return np.abs(x - 0.25).sum(axis=1) + (x * x).sum(axis=1), np.sign(x - 0.25) + 2 * x

    with np.errstate(all="ignore"):
        res = minimize_batched(fun, np.array([[0.7, -0.3]]), max_iter=400)
    assert res.converged[0] and res.n_iter[0] < 400
    assert np.allclose(res.x, 0.25, atol=1e-6)


@pytest.mark.parametrize("memory", [1, 3, 10])
def test_any_memory_reaches_the_minimum(memory):
    fun, c, _ = _quadratics(B=4, p=5, condition=100.0, seed=4)
    res = minimize_batched(fun, np.zeros((4, 5)), memory=memory, max_iter=400)
    assert res.converged.all() and np.allclose(res.x, c, atol=1e-5)
