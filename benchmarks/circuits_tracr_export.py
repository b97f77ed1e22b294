"""One-time conversion: compile RASP programs with tracr and export what mechscope needs, no JAX after.

Run in a venv that has `tracr-pypi` (it needs JAX on CPU; mechscope's own venv does not):

    python -m venv /tmp/tracr-venv && /tmp/tracr-venv/bin/pip install tracr-pypi safetensors
    /tmp/tracr-venv/bin/python benchmarks/circuits_tracr_export.py --out mechscope/zoo/data/tracr

For each program it writes `<name>.safetensors` (the assembled weights, float32, plus a check
batch: tracr's final residual stream on every sequence length) and `<name>.json`:

- `residual_labels`: the residual basis, one "variable:value" label per dimension;
- `tokens`: the input vocabulary in encoder order (BOS and PAD included), `outputs`: the output
  space's labels, `max_seq_len`, `model` (layers, heads, key size, MLP width);
- `blocks`: per used half-layer its kind (attn / mlp), layer, the RASP expression it computes and
  which residual labels it reads (MLP input; attention query / key / value) and writes;
- `exprs`: the program graph — per expression its type, children, value set and, for Map and
  SequenceMap, the full value table (what maps to what): the true value-level edges come from it.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from safetensors.numpy import save_file
from tracr.compiler import (
    basis_inference,
    craft_graph_to_model,
    craft_model_to_transformer,
    expr_to_craft_graph,
    lib,
    nodes,
    rasp_to_graph,
)
from tracr.craft import bases, transformers
from tracr.rasp import rasp

BOS, PAD = "BOS", "PAD"
VOCAB = {1, 2, 3}
MAX_SEQ_LEN = 5


def programs() -> dict[str, rasp.SOp]:
    return {
        "reverse": lib.make_reverse(rasp.tokens),
        "sort": lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=MAX_SEQ_LEN, min_key=1),
    }


def labels(space: bases.VectorSpaceWithBasis) -> list[str]:
    return [str(d.name) if d.value is None else f"{d.name}:{d.value}" for d in space.basis]


def compile_program(program: rasp.SOp) -> tuple[Any, Any, Any]:
    """tracr's `compile_rasp_to_model`, step by step, keeping the graph and the craft model."""
    extracted = rasp_to_graph.extract_rasp_graph(program)
    graph, sources, sink = extracted.graph, extracted.sources, extracted.sink
    basis_inference.infer_bases(graph, sink, VOCAB, MAX_SEQ_LEN)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(
        graph, bos_dir=bases.BasisDirection(rasp.tokens.label, BOS), mlp_exactness=100)
    craft_model = craft_graph_to_model.craft_graph_to_model(graph, sources)
    model = craft_model_to_transformer.craft_model_to_transformer(
        craft_model=craft_model, graph=graph, sink=sink, max_seq_len=MAX_SEQ_LEN, compiler_bos=BOS, compiler_pad=PAD)
    return model, craft_model, graph


def expr_table(graph: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, node in graph.nodes.items():
        expr = node[nodes.EXPR]
        entry: dict[str, Any] = {"type": type(expr).__name__, "children": [c.label for c in expr.children],
                                 "values": sorted(map(str, node.get(nodes.VALUE_SET, set()) or set()))}
        if isinstance(expr, rasp.Map):
            vals = graph.nodes[expr.inner.label][nodes.VALUE_SET]
            entry["table"] = [[str(v), str(expr.f(v))] for v in sorted(vals)]
        elif isinstance(expr, rasp.SequenceMap):
            a, b = (graph.nodes[c.label][nodes.VALUE_SET] for c in (expr.fst, expr.snd))
            entry["table"] = [[str(u), str(w), str(expr.f(u, w))] for u in sorted(a) for w in sorted(b)]
        elif isinstance(expr, rasp.Select):
            entry["keys"], entry["queries"] = expr.keys.label, expr.queries.label
        elif isinstance(expr, rasp.Aggregate):
            entry["selector"], entry["sop"] = expr.selector.label, expr.sop.label
        elif isinstance(expr, rasp.SelectorWidth):
            entry["selector"] = expr.selector.label
        out[label] = entry
    return out


def block_roles(craft_model: Any, graph: Any, module_names: list[str]) -> list[dict[str, Any]]:
    roles = []
    for name, block in zip(module_names, craft_model.blocks, strict=True):
        layer = int(name.split("_")[1].split("/")[0])
        written = labels(block.snd.output_space) if isinstance(block, transformers.MLP) else [
            w for h in block.as_multi().heads() for w in labels(h.w_ov.output_space)]
        # the expression a block computes: the program variable its writes belong to (tracr keeps
        # no back-reference from a block to its expression)
        expr = next((w.split(":")[0] for w in written if w.split(":")[0] in graph.nodes), None)
        if isinstance(block, transformers.MLP):
            roles.append({"kind": "mlp", "layer": layer, "expr": expr, "reads": labels(block.fst.input_space),
                          "writes": labels(block.snd.output_space), "hidden": block.fst.output_space.num_dims})
        else:
            heads = [{"query": labels(h.w_qk.left_space), "key": labels(h.w_qk.right_space),
                      "value": labels(h.w_ov.input_space), "writes": labels(h.w_ov.output_space)}
                     for h in block.as_multi().heads()]
            roles.append({"kind": "attn", "layer": layer, "expr": expr, "heads": heads})
    return roles


def export(name: str, program: rasp.SOp, out: Path) -> None:
    from tracr.compiler import assemble

    model, craft_model, graph = compile_program(program)
    _, module_names = assemble._get_model_config_and_module_names(craft_model)
    params = {f"{k}/{p}": np.asarray(v, dtype=np.float32) for k, ps in model.params.items() for p, v in ps.items()}
    enc = model.input_encoder.encoding_map
    tokens = [str(t) for t, _ in sorted(enc.items(), key=lambda kv: kv[1])]
    out_labels = list(model.output_encoder.encoding_map) if model.output_encoder and hasattr(
        model.output_encoder, "encoding_map") else []
    rng = random.Random(0)
    check = {}
    for n in range(1, MAX_SEQ_LEN + 1):  # tracr's forward has no pad mask: one batch per length
        seqs = [[BOS] + [rng.choice(sorted(VOCAB)) for _ in range(n)] for _ in range(16)]
        ids = np.array([[enc[t] for t in s] for s in seqs])
        res = model.forward(model.params, jnp.array(ids)).transformer_output.output
        check[f"check/len{n}/tokens"] = ids.astype(np.int64)
        check[f"check/len{n}/residual"] = np.asarray(res, dtype=np.float32)
        check[f"check/len{n}/decoded"] = np.array([[out_labels.index(v) if v in out_labels else -1 for v in
                                                    model.apply(s).decoded[1:]] for s in seqs], dtype=np.int64)
    cfg = model.model_config
    body = {
        "program": name, "max_seq_len": MAX_SEQ_LEN, "vocab": sorted(map(str, VOCAB)), "bos": BOS, "pad": PAD,
        "tokens": tokens, "outputs": [str(v) for v in out_labels], "output_name": program.label,
        "residual_labels": [_label(lb) for lb in model.residual_labels],
        "model": {"layers": cfg.num_layers, "heads": cfg.num_heads, "key_size": cfg.key_size,
                  "mlp_hidden": cfg.mlp_hidden_size},
        "blocks": block_roles(craft_model, graph, module_names),
        "exprs": expr_table(graph),
        "regenerate": "python benchmarks/circuits_tracr_export.py --out mechscope/zoo/data/tracr (tracr-pypi 1.0.0)",
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file({**params, **check}, str(out / f"{name}.safetensors"))
    (out / f"{name}.json").write_text(json.dumps(body, indent=1))
    print(name, {k: v.shape for k, v in params.items()}, len(body["residual_labels"]), "dims")


def _label(lb: str) -> str:
    """tracr's str(BasisDirection) is "BasisDirection(name='x', value=1)": make it "x:1"."""
    if lb.startswith("BasisDirection("):
        inner = lb[len("BasisDirection("):-1]
        parts = dict(p.split("=", 1) for p in inner.split(", "))
        name = parts["name"].strip("'")
        value = parts.get("value", "None").strip("'")
        return name if value == "None" else f"{name}:{value}"
    return lb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("mechscope/zoo/data/tracr"))
    args = ap.parse_args()
    for name, program in programs().items():
        export(name, program, args.out)


if __name__ == "__main__":
    main()
