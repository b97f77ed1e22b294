import math

import torch

from mechscope.metrics.matching import (
    activation_cosine,
    activation_similarity,
    extend_basis,
    hungarian,
    parameter_similarity,
    project_read,
    read_basis,
    side_key,
    signed_tiebreak,
)


def test_parameter_similarity_is_signed_frobenius_cosine() -> None:
    T = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # (1, 2, 2)
    P = torch.stack([T[0], -T[0], 2 * T[0], torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.zeros(2, 2)])
    sim = parameter_similarity(P, T)
    assert torch.allclose(sim, torch.tensor([[1.0, -1.0, 1.0, 1 / math.sqrt(2), 0.0]]))


def test_activation_similarity_ignores_sign() -> None:
    t = torch.tensor([[3.0, 4.0]])
    p = torch.tensor([[-3.0, -4.0], [4.0, -3.0], [1.0, 0.0]])
    assert torch.allclose(activation_similarity(p, t), torch.tensor([[1.0, 0.0, 0.6]]))


def test_non_negative_latents_are_matched_to_the_true_vector_on_their_side() -> None:
    """resid-mlp-1l's signed features: truths +t and −t; two duplicate latents on −t, one slightly
    less aligned latent on +t. |cos| alone (and a 1e-6 tie-break) pairs +t with a −t duplicate."""
    t = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])  # feature+ and feature−
    p = torch.tensor([[-1.0, 1e-3, 0.0], [-1.0, 0.0, 1e-3], [1.0, 3e-2, 0.0]])  # −t, −t, +t (|cos| 0.9996)
    sim = activation_similarity(p, t)
    signed = hungarian(sim, side_key(sim, activation_cosine(p, t)))
    assert signed.component[0] == 2 and signed.component[1] in (0, 1)
    assert signed.similarity[0] == float(sim[0, 2])  # the reported similarity is still |cos|
    saelens = hungarian(sim, sim.double() + signed_tiebreak(activation_cosine(p, t)))
    assert 2 not in saelens.component  # |cos| (SAELens's mcc matching; SPD's): the duplicates win


def test_read_projection_drops_the_unused_read_side() -> None:
    P = torch.tensor([[[1.0, 1.0]]])  # (1, 1, 2): reads e_0 + e_1
    proj = torch.diag(torch.tensor([1.0, 0.0]))  # data only ever lives on e_0
    T = torch.tensor([[[1.0, 0.0]]])
    assert math.isclose(float(parameter_similarity(P, T)), 1 / math.sqrt(2), rel_tol=1e-6)
    assert math.isclose(float(parameter_similarity(project_read(P, proj), T)), 1.0, rel_tol=1e-6)


def test_hungarian_recovers_a_permutation_one_to_one() -> None:
    sim = torch.tensor([[0.1, 0.9, 0.8], [0.2, 0.95, 0.1]])  # greedy would give row 1 col 1 twice
    m = hungarian(sim)
    assert m.truth == [0, 1]
    assert m.component == [2, 1]
    assert m.similarity == [float(sim[0, 2]), float(sim[1, 1])]


def test_read_basis_and_extension() -> None:
    Q0 = torch.linalg.qr(torch.randn(6, 2, generator=torch.Generator().manual_seed(0)))[0]  # (6, 2)
    Q = read_basis(Q0 @ Q0.T)
    assert Q is not None and Q.shape == (6, 2)
    assert torch.allclose(Q @ Q.T, Q0 @ Q0.T, atol=1e-5)
    assert read_basis(torch.tensor([[1.0, 1.0], [0.0, 0.0]])) is None  # not symmetric: no basis
    T = torch.outer(torch.ones(3), torch.eye(6)[5])  # reads e_5 only
    Qx = extend_basis(Q, T)
    assert Qx.shape == (6, 3) and torch.allclose(Qx.T @ Qx, torch.eye(3), atol=1e-5)
    assert torch.allclose(T @ Qx @ Qx.T, T, atol=1e-5)  # T survives the extended projection
    assert extend_basis(Q, T @ Q0 @ Q0.T).shape == (6, 2)  # already inside span(Q): unchanged
