"""What SPD converges to on each stress variant, and why (issue 19, item 4): one paragraph per
variant, with the numbers, for the stress report to print under SPD's row.

Measured with the stress preset's SPD settings (`mechscope/bench/presets.py`: 300 steps, C = 50,
data init, p = 1, importance 1e-3; overcomplete C = 40; synth-sae-bench C = 1,024, 600 steps × 512), seed 0
unless stated, the project's scorer; "before" is the engine before `init_peel` (spd_presets.py).
The evidence per variant is the causal-importance pattern on one-hot inputs and which true columns
W[:, i] each live component carries (‖P_c[:, i]‖ / ‖W[:, i]‖ ≥ 0.2), measured by
`benchmarks/spd_stress.py` (table in benchmarks/RESULTS.md, "SPD on the stress tasks").
"""

from __future__ import annotations

import html

SPD_STRESS_NOTES: dict[str, str] = {
    "stress-hierarchical": (
        "Was an implementation problem, now fixed. A child fires only together with its parent, so no "
        "input lies on a child's line; the data init (components start on input lines that recur) found "
        "the 10 parents only and started the 30 children from zero, which 300 steps do not train: mmcs "
        "0.40, ml2r 0.61, activity_f1 0.30, all 50 components alive, 153 CI-pattern errors, 20 of 40 "
        "features carried by no component. The init now also peels: it projects the found lines out of "
        "the inputs and takes the lines that recur in what is left (a child's line, once its parent's "
        "part is gone). With that, every feature has its own component (cos > 0.9) and no parent and "
        "child are merged: mmcs 0.994 / ml2r 0.990 / activity_f1 0.983, 40 alive, 2 errors (seed 1: "
        "0.990 / 0.967 / 0.975, 3 errors). SPD itself does not merge a hierarchy: a rank-1 piece cannot "
        "hold two different columns of W."
    ),
    "stress-dense": (
        "Was an implementation problem, now fixed. Four features are on in 80 % of the inputs, so a "
        "sparse feature almost never occurs alone (about 0.2 times in the 16k-input init pool). The "
        "data init found only the dense features' lines and started the 36 sparse features from zero: "
        "mmcs 0.30, ml2r 0.56, activity_f1 0.33, 50 alive, 159 CI-pattern errors, 21 features carried "
        "by no component. Once the dense lines are projected out, each sparse feature's line recurs, "
        "and the peeled init gives one component per feature: mmcs 0.995 / 0.985 / 0.975, 40 alive, "
        "3 errors (seed 1: 0.988 / 0.972 / 0.952, 41 alive, 12 errors). SPD does not lump the dense "
        "features into one piece: each keeps its own component, which is important on the 80 % of "
        "inputs where it is on."
    ),
    "stress-overcomplete": (
        "This comes from the preset, not from SPD. It has 80 features and C = 40 components (the cap "
        "the preset puts on every method). SPD keeps 40 features whole: each live component carries "
        "one column of W at full size (1.0 to 1.09). The other 40 columns must still sum into W "
        "(faithfulness), so they are spread in small parts over many components, none above 20 %. "
        "Those components then also fire on the uncovered features' one-hot inputs (up to 19 each). "
        "Result: mmcs 0.45, ml2r 1.19, activity_f1 0.19, 375 CI-pattern errors, 38 features carried "
        "by no component. With one rank-1 piece per feature, mmcs cannot exceed C / n = 0.5. With "
        "C = 90 the same run is clean: mmcs 0.9996, ml2r 1.003, activity_f1 1.0, all 80 features with "
        "their own component, 0 errors."
    ),
    "stress-correlated": (
        "Now fine on all three seeds. Pairs of features that fire together (correlation 0.8) are still "
        "each alone often enough for their own lines to recur. The old seed-0 failure (0.31) came from "
        "a chance line: two features with continuous magnitudes landing on the same rounded line a "
        "few times, which made the data init read the site as dense. Its count threshold was fixed "
        "earlier (`frequent_directions` min_frac). Today: mmcs 0.994 / 0.994 / 0.985 on seeds 0, 1 "
        "and 2, ml2r 0.98 / 0.975 / 0.96, activity_f1 0.99, 40 alive, 1 CI-pattern error each. Seed 2 "
        "merges one correlated pair into one component (39 of 40 features with their own). That is "
        "SPD's one real weakness here: a pair that is almost always on together costs about the same "
        "importance as one piece."
    ),
    "synth-sae-bench": (
        "Was an implementation problem, now fixed: our init and step size, not SPD. 1,024 "
        "Zipf-distributed features with mean L0 7.3 leave only 4.6 % of the inputs with a single "
        "feature, so only 4 input lines recur and peeling finds nothing more (what is left of an input "
        "is still several features). The other 1,020 components started from zero and the stress "
        "budget (600 steps) did not train them: mmcs 0.026, ml2r 0.70, activity_f1 0.003, faithfulness "
        "1.04. The input here is the sparse code itself, so each feature's line is an input axis that "
        "the data shows exactly zero most of the time: the init now starts a component on each such "
        "axis (`init_axes`), from a 65k-input pool so that the rarest features (p ≈ 5e-4) occur, and U, V "
        "step at 1e-4 (1,024-wide reads, as on the residual MLP). Seed 0: mmcs 0.9993, ml2r 0.994, every "
        "feature with its own component, none merged; activity_f1 0.825 (179 CI-pattern errors: some "
        "components stay important on other features' one-hot inputs after 600 steps)."
    ),
}


def spd_notes_block(variants: list[str], methods: set[str]) -> str:
    """The paragraphs for the variants this bench ran, under SPD's stress rows; "" without SPD."""
    notes = [(v, SPD_STRESS_NOTES[v]) for v in variants if v in SPD_STRESS_NOTES]
    if "spd" not in methods or not notes:
        return ""
    items = "".join(f"<li><b>{html.escape(v)}</b>: {html.escape(text)}</li>" for v, text in notes)
    return f"<h3>What SPD converges to on each variant, and why</h3><ul class='note'>{items}</ul>"
