"""Attribution graphs: exact on linear paths, streamed without changing the result, saved and pruned."""

import pytest
import torch

from mechscope.circuits import ablation_check, build_graph, groups_of, neuron_decomposition
from mechscope.circuits.graph import AttributionGraph, GraphConfig
from mechscope.decompose.dictionary import SparseCoder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.zoo import get_task
from mechscope.zoo.resid_mlp import ResidMLPConfig, ResidMLPTask


def _resid(seed: int = 0) -> tuple[ResidMLPTask, torch.nn.Module]:
    task = ResidMLPTask(ResidMLPConfig(n_features=12, d_embed=32, d_mlp=6, n_layers=2), "tiny", "")
    return task, task.build(seed)  # untrained: the graph is exact for any weights


def _dense(graph: AttributionGraph) -> torch.Tensor:
    m = torch.zeros(len(graph.nodes), len(graph.nodes))
    m[graph.src, graph.dst] = graph.weight
    return m


def test_input_to_neuron_edges_are_gradient_times_activation() -> None:
    task, model = _resid()
    dec = neuron_decomposition(model, task.mlp_sites())
    x = task.sample(512, torch.Generator().manual_seed(0)) * 5
    graph = build_graph(dec, x)
    W_E, W_in0 = model.W_E, model.layers[0].mlp_in.weight.detach()
    reads = W_E @ W_in0.T  # (n, neurons): ∂pre_n/∂x_i
    fires = (x @ reads > 0).float()  # (B, neurons)
    expected = (x[:, :, None] * reads[None] * fires[:, None, :]).abs().mean(0)  # (n, neurons)
    first = graph.node_ids("component", "layers.0.mlp_out")
    got = _dense(graph)[: task.n_features][:, first]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
    # neuron → neuron across layers: z_u (W_in1[d] · W_out0[:, u]), gated by d firing
    W_out0, W_in1 = model.layers[0].mlp_out.weight.detach(), model.layers[1].mlp_in.weight.detach()
    r0 = x @ W_E
    h0 = torch.relu(r0 @ W_in0.T)
    r1 = r0 + h0 @ W_out0.T
    fires1 = (r1 @ W_in1.T > 0).float()
    exp01 = (h0[:, :, None] * (W_in1 @ W_out0).T[None] * fires1[:, None, :]).abs().mean(0)
    second = graph.node_ids("component", "layers.1.mlp_out")
    torch.testing.assert_close(_dense(graph)[first][:, second], exp01, rtol=1e-4, atol=1e-7)


def test_linear_paths_match_ablation_exactly() -> None:
    task, model = _resid(1)
    dec = neuron_decomposition(model, task.mlp_sites())
    x = task.sample(256, torch.Generator().manual_seed(1)) * 5
    check = ablation_check(dec, x, build_graph(dec, x), n_edges=100)
    assert check.pearson > 0.999 and check.rel_error < 1e-3


def test_sae_through_a_relu_mlp_tracks_ablation() -> None:
    """SAEs on both MLP outputs: layer-0 latents reach layer-1 latents through layer 1's ReLU."""
    task, model = _resid(2)
    gen = torch.Generator().manual_seed(3)
    coders = {}
    for li in range(2):
        c = SparseCoder(32, 32, 40, "relu", sae=True, generator=gen)
        coders[f"layers.{li}.mlp_out"] = SiteCoder(c, (f"layers.{li}.mlp_out", "output"))
    dec = DictionaryDecomposition(model, coders)
    x = task.sample(256, torch.Generator().manual_seed(2)) * 5
    check = ablation_check(dec, x, build_graph(dec, x), n_edges=150)
    assert check.pearson > 0.9


def test_streaming_chunks_and_slots_do_not_change_the_graph() -> None:
    task, model = _resid(3)
    dec = neuron_decomposition(model, task.mlp_sites())
    x = task.sample(300, torch.Generator().manual_seed(4)) * 5
    a = build_graph(dec, x, GraphConfig(chunk=1024))
    b = build_graph(dec, x, GraphConfig(chunk=37))
    torch.testing.assert_close(_dense(a), _dense(b), rtol=1e-5, atol=1e-8)


def test_prune_save_load(tmp_path: object) -> None:
    task = get_task("boolean-circuits")
    model = task.make_target(0)
    dec = neuron_decomposition(model, task.mlp_sites())
    graph = build_graph(dec, task.onehot())
    kept = graph.prune(0.1)
    assert kept.n_edges == -(-graph.n_edges // 10)
    assert float(kept.normalized().min()) >= float(graph.normalized().sort(descending=True).values[kept.n_edges - 1]) - 1e-6
    kept.save(tmp_path)  # type: ignore[arg-type]
    back = AttributionGraph.load(tmp_path)  # type: ignore[arg-type]
    assert back.nodes == kept.nodes and torch.equal(back.src, kept.src) and torch.equal(back.weight, kept.weight)
    with pytest.raises(ValueError, match="keep"):
        graph.prune(0.0)


def test_one_site_is_a_one_line_error() -> None:
    task = get_task("boolean-circuits")
    model = task.make_target(0)
    dec = neuron_decomposition(model, task.mlp_sites()[:1])
    with pytest.raises(ValueError, match="two or more sites"):
        build_graph(dec, task.onehot())
    assert len(groups_of(dec)) == 1
