"""Circuits: attribution graphs between a decomposition's components across sites, and their truth.

    graph = build_graph(decomposition, x)        # nodes: inputs, components, outputs; edges: direct effects
    graph.prune(0.05).save("graph/")
    ablation_check(decomposition, x, graph)      # the linear weights vs. the ablations they approximate
"""

from mechscope.circuits.ablation import AblationCheck, ablation_check
from mechscope.circuits.graph import AttributionGraph, GraphConfig, Node, build_graph
from mechscope.circuits.groups import Group, groups_of
from mechscope.circuits.neurons import neuron_decomposition

__all__ = [
    "AblationCheck",
    "AttributionGraph",
    "GraphConfig",
    "Group",
    "Node",
    "ablation_check",
    "build_graph",
    "groups_of",
    "neuron_decomposition",
]
