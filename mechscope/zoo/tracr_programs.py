"""Compiled transformers: RASP programs compiled to weights by tracr, whose circuits are known.

tracr (Lindner et al. 2023) compiles a RASP program into a transformer in which every program
variable owns named residual dimensions ("opp_idx:3" = the variable opp_idx holds 3) and every
half-layer computes one expression. The compiled weights were exported once, with JAX, by
`benchmarks/circuits_tracr_export.py` into `mechscope/zoo/data/tracr/<program>.{safetensors,json}`
(weights, residual layout, each block's reads and writes, the program's value tables, and a check
batch of tracr's own residual stream); this file needs no JAX.

    tracr-reverse   reverse(tokens): length (attn + MLP 0) → opp_idx = length − indices (MLP 1)
                    → opp_idx − 1 (MLP 2) → aggregate tokens where indices = opp_idx − 1 (attn 3)
    tracr-sort      sort(tokens): keys = tokens + indices/5 (MLP 0) → target_pos = #smaller keys
                    (attn 1 + MLP 1) → aggregate tokens where target_pos = indices (attn 2)

Vocabulary {1, 2, 3}, sequences of 1–5 tokens after BOS, padded with PAD to 6 positions. The
torch module (`CompiledTransformer`) takes one-hot tokens x [B, 6, 5] and returns the output
variable's logits [B, 6, 3]: embed → per layer r += attn(r), r += mlp_out(ReLU(mlp_in(r))) →
unembed (the output variable's dimensions). Two changes from tracr's forward, both exact: PAD keys
are masked (tracr's compiled model has no pad mask: its check batch has one length per batch), and
the constant "one" dimension is added as a bias instead of through the token embedding, so an
input's gradient × activation is its token's own effect, not the bias every token carries.

The true circuit (`circuit_truth`), value by value: nodes are the tokens (inputs), every value
dimension an MLP writes (features, at `layers.l.mlp_out`, direction = that residual basis vector)
and the output values. Edges follow the program's dataflow through residual and OV paths:

    Map f(u):            u:v → out:f(v)               (its value table)
    SequenceMap f(u, w): u:v → out:f(v, w), w:w' → out:f(v, w')
    SelectorWidth:       BOS → width:n for every n    (the attention copies BOS; the MLP counts)
    Aggregate(s, u):     u:v → out:v                  (OV copies the value)

`indices` live in the position embedding (not an input feature), so their edges are not
candidates. Query/key dependencies (which positions an aggregate or a width selects) are
`excluded` — neither true nor false: a graph of direct effects through frozen attention patterns
cannot carry them (circuit-tracer's graphs freeze attention too).
"""

from __future__ import annotations

import itertools
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from mechscope.circuits.truth import CircuitTruth, TrueNode
from mechscope.config import Config
from mechscope.zoo import register_task
from mechscope.zoo.base import GroundTruth, Mechanism, Progress, Task, no_progress

DATA = Path(__file__).parent / "data" / "tracr"
PROGRAMS = ("reverse", "sort")


@cache
def load_program(name: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(layout JSON, tensors) of an exported program."""
    if name not in PROGRAMS:
        raise ValueError(f"unknown compiled program {name!r}; available: {', '.join(PROGRAMS)}")
    return json.loads((DATA / f"{name}.json").read_text()), load_file(str(DATA / f"{name}.safetensors"))


class Attention(nn.Module):
    """Multi-head attention as haiku's (tracr's): logits q·k / √key_size, PAD keys masked."""

    def __init__(self, d: int, heads: int, key_size: int) -> None:
        super().__init__()
        self.heads, self.key_size = heads, key_size
        self.query, self.key, self.value = (nn.Linear(d, heads * key_size) for _ in range(3))
        self.linear = nn.Linear(heads * key_size, d)

    def forward(self, r: Tensor, key_mask: Tensor) -> Tensor:
        B, T, _ = r.shape
        q, k, v = (m(r).view(B, T, self.heads, self.key_size) for m in (self.query, self.key, self.value))
        logits = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(self.key_size)
        logits = logits.masked_fill(~key_mask[:, None, None, :], -1e30)
        out = torch.einsum("bhts,bshd->bthd", logits.softmax(-1), v).reshape(B, T, -1)
        return self.linear(out)


class CompiledLayer(nn.Module):
    def __init__(self, d: int, heads: int, key_size: int, hidden: int) -> None:
        super().__init__()
        self.attn = Attention(d, heads, key_size)
        self.mlp_in = nn.Linear(d, hidden)
        self.mlp_out = nn.Linear(hidden, d)

    def forward(self, r: Tensor, key_mask: Tensor) -> Tensor:
        r = r + self.attn(r, key_mask)
        return r + self.mlp_out(F.relu(self.mlp_in(r)))


class CompiledTransformer(nn.Module):
    """tracr's compiled model in torch: x [B, T, n_tokens] one-hot → output logits [B, T, n_out]."""

    def __init__(self, layout: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        super().__init__()
        labels: list[str] = layout["residual_labels"]
        m = layout["model"]
        d, self.pad = len(labels), layout["tokens"].index(layout["pad"])
        W_tok = tensors["token_embed/embeddings"].clone()  # (n_tokens, d)
        one = torch.zeros(d)
        if "one" in labels:
            one[labels.index("one")] = 1.0
            W_tok[:, labels.index("one")] = 0.0  # carried by the bias below instead
        self.embed = nn.Linear(W_tok.shape[0], d, bias=False)
        self.register_buffer("pos", tensors["pos_embed/embeddings"].clone())
        self.register_buffer("one", one)
        self.pos: Tensor
        self.one: Tensor
        self.layers = nn.ModuleList([CompiledLayer(d, m["heads"], m["key_size"], m["mlp_hidden"]) for _ in range(m["layers"])])
        out_dims = [labels.index(f"{layout['output_name']}:{v}") for v in layout["outputs"]]
        self.unembed = nn.Linear(d, len(out_dims), bias=False)
        with torch.no_grad():
            self.embed.weight.copy_(W_tok.T)
            self.unembed.weight.zero_()
            self.unembed.weight[torch.arange(len(out_dims)), torch.tensor(out_dims)] = 1.0
            for li, layer in enumerate(self.layers):
                assert isinstance(layer, CompiledLayer)
                pre = f"transformer/layer_{li}"
                pairs = [(layer.attn.query, "attn/query"), (layer.attn.key, "attn/key"), (layer.attn.value, "attn/value"),
                         (layer.attn.linear, "attn/linear"), (layer.mlp_in, "mlp/linear_1"), (layer.mlp_out, "mlp/linear_2")]
                for lin, name in pairs:
                    lin.weight.copy_(tensors[f"{pre}/{name}/w"].T)
                    lin.bias.copy_(tensors[f"{pre}/{name}/b"])
        self.requires_grad_(False)

    def residual(self, x: Tensor) -> Tensor:
        """[B, T, d] the final residual stream (what tracr's `transformer_output.output` holds)."""
        T = x.shape[1]
        key_mask = x[..., self.pad] < 0.5
        r = self.embed(x) + self.pos[:T] + self.one
        for layer in self.layers:
            r = layer(r, key_mask)
        return r

    def forward(self, x: Tensor) -> Tensor:
        return self.unembed(self.residual(x))


class CompiledConfig(Config):
    pass


class CompiledProgramTask(Task):
    family = "circuits"
    Cfg = CompiledConfig
    config: CompiledConfig

    def __init__(self, program: str, config: CompiledConfig | None = None) -> None:
        super().__init__(config, f"tracr-{program}", f"tracr-compiled transformer for RASP {program}: known residual "
                                                    "subspaces per variable and value-level true edges")  # fmt: skip
        self.program = program
        self.layout, self.tensors = load_program(program)

    # --- inputs ------------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return len(self.layout["tokens"])

    def encode(self, seqs: list[list[str]]) -> Tensor:
        """BOS + tokens, PAD to max_seq_len + 1, one-hot [len(seqs), T, n_tokens]."""
        tok = self.layout["tokens"]
        T = self.layout["max_seq_len"] + 1
        ids = [[tok.index(self.layout["bos"])] + [tok.index(t) for t in s] + [tok.index(self.layout["pad"])] * (T - 1 - len(s))
               for s in seqs]  # fmt: skip
        return F.one_hot(torch.tensor(ids), len(tok)).float()

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        vocab, L = self.layout["vocab"], self.layout["max_seq_len"]
        lengths = torch.randint(1, L + 1, (n,), generator=generator).tolist()
        toks = torch.randint(0, len(vocab), (n, L), generator=generator).tolist()
        return self.encode([[vocab[t] for t in toks[i][: lengths[i]]] for i in range(n)])

    def onehot(self, value: float | None = None) -> Tensor:
        """Every sequence of every length (3 + 9 + … + 243 = 363): the evaluation set of the graph."""
        vocab, L = self.layout["vocab"], self.layout["max_seq_len"]
        return self.encode([list(s) for n in range(1, L + 1) for s in itertools.product(vocab, repeat=n)])

    # --- target ------------------------------------------------------------------------------
    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        """The compiled weights (every seed gets the same: nothing is random)."""
        model = CompiledTransformer(self.layout, self.tensors)
        model.eval()
        progress(1, 1)
        return model

    def mlp_layers(self) -> list[int]:
        return sorted(b["layer"] for b in self.layout["blocks"] if b["kind"] == "mlp")

    def activation_sites(self) -> list[str]:
        return [f"layers.{li}.mlp_out" for li in self.mlp_layers()]

    def mlp_sites(self) -> list[tuple[str, str]]:
        return [(f"layers.{li}.mlp_in", f"layers.{li}.mlp_out") for li in self.mlp_layers()]

    # --- truth -------------------------------------------------------------------------------
    def _features(self) -> list[tuple[str, int, str]]:
        """(residual label, layer, variable) of every value dimension an MLP writes for its expression."""
        out = []
        for b in self.layout["blocks"]:
            if b["kind"] == "mlp":
                out += [(w, b["layer"], b["expr"]) for w in b["writes"] if w.split(":")[0] == b["expr"]]
        return out

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        """Each MLP-written value dimension as an activation mechanism at its `mlp_out` (rule dense:
        a value is a function of the whole sequence, not of one input feature)."""
        labels = self.layout["residual_labels"]
        mechs = []
        for lab, li, _ in self._features():
            e = torch.zeros(len(labels))
            e[labels.index(lab)] = 1.0
            mechs.append(Mechanism(lab, "activation", f"layers.{li}.mlp_out", e, 1, "dense"))
        return GroundTruth(mechs, n_features=self.n_features, represented=list(range(self.n_features)),
                           output_kind="mse", notes=["compiled by tracr: values are residual basis directions"])  # fmt: skip

    def circuit_truth(self, target: nn.Module) -> CircuitTruth:
        return compiled_circuit(self.layout, self._features())


def compiled_circuit(layout: dict[str, Any], features: list[tuple[str, int, str]]) -> CircuitTruth:
    """The value-level true circuit of the module docstring, from the exported program graph."""
    labels, exprs = layout["residual_labels"], layout["exprs"]
    n_layers = layout["model"]["layers"]
    nodes = [TrueNode(f"tok:{t}", "input", 0, index=i) for i, t in enumerate(layout["tokens"])]
    ix = {f"tokens:{t}": i for i, t in enumerate(layout["tokens"])}
    for lab, li, _ in features:
        e = torch.zeros(len(labels))
        e[labels.index(lab)] = 1.0
        ix[lab] = len(nodes)
        nodes.append(TrueNode(lab, "feature", li + 1, site=f"layers.{li}.mlp_out", direction=e))
    out_var = layout["output_name"]
    outs = {f"{out_var}:{v}": len(nodes) + k for k, v in enumerate(layout["outputs"])}
    nodes += [TrueNode(f"out:{v}", "output", n_layers + 1, index=k) for k, v in enumerate(layout["outputs"])]
    written = {var for _, _, var in features}

    def sources(var: str, value: str) -> list[int]:
        """True nodes that carry var = value: itself if it is a node, an aggregate's OV source."""
        if f"{var}:{value}" in ix:
            return [ix[f"{var}:{value}"]]
        e = exprs.get(var, {})
        if e.get("type") == "Aggregate":
            return sources(e["sop"], value)
        return []  # indices (position embedding) and values nothing writes

    edges: set[tuple[int, int]] = set()
    excluded: set[tuple[int, int]] = set()

    def dest(var: str, value: str) -> int | None:
        return ix.get(f"{var}:{value}") if var in written else outs.get(f"{var}:{value}")

    for var, e in exprs.items():
        kind, kids = e["type"], e["children"]
        if kind == "Map":
            for v, fv in e["table"]:
                q = dest(var, fv)
                edges |= {(p, q) for p in sources(kids[0], v)} if q is not None else set()
        elif kind == "SequenceMap":
            for u, w, fv in e["table"]:
                q = dest(var, fv)
                if q is not None:
                    edges |= {(p, q) for p in sources(kids[0], u) + sources(kids[1], w)}
        elif kind in ("SelectorWidth", "Aggregate"):
            sel = exprs[e["selector"]]
            qk = [p for side in (sel["keys"], sel["queries"]) for v in exprs[side]["values"] for p in sources(side, v)]
            for v in e["values"]:
                q = dest(var, v)
                if q is None:
                    continue
                if kind == "SelectorWidth":
                    edges.add((ix[f"tokens:{layout['bos']}"], q))
                else:
                    edges |= {(p, q) for p in sources(e["sop"], v)}
                excluded |= {(p, q) for p in qk}
    if out_var in written:  # the output variable written by an MLP: its values feed the outputs
        edges |= {(ix[lab], q) for lab, q in outs.items() if lab in ix}
    excluded -= edges
    notes = ["value-level edges from the program's tables (Map / SequenceMap), SelectorWidth (BOS → width) "
             "and Aggregate (OV copies); query/key dependencies excluded from the candidates"]  # fmt: skip
    return CircuitTruth(nodes, edges, notes, excluded)


for _program in PROGRAMS:
    register_task(f"tracr-{_program}", lambda _p=_program: CompiledProgramTask(_p))  # type: ignore[misc]
