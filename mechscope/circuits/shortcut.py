"""Multi-hop path or shortcut? The verdict on each two-hop step of a true circuit.

A true circuit y = XOR(h, c), h = AND(a, b) has the *hop* h → y: y reads the intermediate feature
h, which reads a and b. A graph can explain y in two ways:

- **multi-hop**: it has a node for h (a component with |cos| ≥ the recall threshold) and y's
  incoming weight from h outweighs what it gets straight from h's operands;
- **shortcut**: it wires a and b straight to y — y's share from h's operands that y does not read
  itself, Σ_{a ∈ src(h) \\ src(y)} S(a, y), is at least its share from h, S(h, y) (what a
  cross-layer transcoder can learn: a layer-0 latent reading a, b, c that writes y into layer 1);
- **missing**: neither — no node for h and no shortcut weight (the path is lost, not rewired).

S is the projection of the graph onto the true nodes (`score.project`: each true destination's
share of incoming weight by true source, paths through unmatched components contracted), so the
verdict reads the same numbers `edge_auroc` ranks.

    hops = hop_verdicts(S, truth, recovered)      # one per (intermediate → feature reading it)
    summary(hops)                                 # "multi-hop 4/4" / "shortcut 3/4, multi-hop 1/4"
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

from torch import Tensor

from mechscope.circuits.truth import CircuitTruth

Verdict = Literal["multi-hop", "shortcut", "missing"]


@dataclass(frozen=True)
class Hop:
    intermediate: str
    reader: str
    recovered: bool
    """the intermediate feature has a component at |cos| ≥ the recall threshold."""
    into_h: float
    """min over h's operands a of S(a, h): the first hop's weakest edge."""
    path: float
    """S(h, y): the second hop."""
    shortcut: float
    """Σ S(a, y) over h's operands that y does not read itself."""
    verdict: Verdict

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict_of(recovered: bool, into_h: float, path: float, shortcut: float) -> Verdict:
    """The rule of the module docstring on one hop's numbers."""
    if shortcut > 0 and shortcut >= path:
        return "shortcut"
    if recovered and path > 0 and into_h > 0:
        return "multi-hop"
    return "missing"


def hop_verdicts(S: Tensor, truth: CircuitTruth, recovered: dict[int, bool]) -> list[Hop]:
    """One Hop per true edge h → y between two features (h an intermediate), from the projected
    graph S [n_true, n_true] and which true features a component recovers (`recovered[node id]`)."""
    if S.shape != (len(truth.nodes), len(truth.nodes)):
        raise ValueError(f"S must be [{len(truth.nodes)}, {len(truth.nodes)}] (the true nodes); got {tuple(S.shape)}")
    sources: dict[int, set[int]] = {}
    for p, q in truth.edges:
        sources.setdefault(q, set()).add(p)
    feats = set(truth.features())
    hops = []
    for h, y in sorted(e for e in truth.edges if e[0] in feats and e[1] in feats):
        ops = sources.get(h, set())
        into_h = min((float(S[a, h]) for a in ops), default=0.0)
        path = float(S[h, y])
        shortcut = sum(float(S[a, y]) for a in ops - sources.get(y, set()))
        rec = bool(recovered.get(h, False))
        hops.append(Hop(truth.nodes[h].name, truth.nodes[y].name, rec, into_h, path, shortcut,
                        verdict_of(rec, into_h, path, shortcut)))  # fmt: skip
    return hops


def shortcut_pairs(truth: CircuitTruth) -> set[tuple[int, int]]:
    """The false pairs a shortcut uses: (a, y) for each hop h → y and operand a of h that y does
    not read. Leaving them out of the candidates asks how much of a graph's edge_auroc deficit
    they account for."""
    sources: dict[int, set[int]] = {}
    for p, q in truth.edges:
        sources.setdefault(q, set()).add(p)
    feats = set(truth.features())
    return {(a, y) for h, y in truth.edges if h in feats and y in feats
            for a in sources.get(h, set()) - sources.get(y, set())}


def summary(hops: list[Hop]) -> str:
    """"multi-hop 4/4" — each verdict's count over the hops, most common first."""
    if not hops:
        return "no multi-hop circuit"
    counts = Counter(h.verdict for h in hops)
    return ", ".join(f"{v} {n}/{len(hops)}" for v, n in counts.most_common())


def overall(hops: list[Hop]) -> Verdict | None:
    """The method's verdict: shortcut if any hop is one (the failure the task exposes), else
    multi-hop if most hops are, else missing."""
    if not hops:
        return None
    counts = Counter(h.verdict for h in hops)
    if counts["shortcut"]:
        return "shortcut"
    return "multi-hop" if counts["multi-hop"] * 2 > len(hops) else "missing"
