"""The yardstick: pure scoring functions of (Decomposition, GroundTruth, evaluation inputs).

`score(decomposition, task, truth=None, *, sets=None, ablation=True, pgd_steps=4) -> Score` is the one entry
point the CLI and the bench call; every key it returns is defined in DESIGN.md's metrics table and
must not drift. The target scored is `decomposition.target`; `truth` defaults to
`task.ground_truth(decomposition.target)`. `Score.metrics` is the metrics.json body (the runner
adds `task`, `method`, `seed`, `target_seed`, `wall_s`, `peak_mem_mb`):

    recovery_space              "parameter" | "activation" (absent: no space in common)
    n_true, true_rank           scored mechanisms of the recovery space; sum of their ranks
    mmcs, mcc, uniqueness, coverage, activity_f1, activity_f1_data     (rank-1 mechanisms)
    ml2r                        parameter space only
    read_mmcs, read_mcc         activation truth with a read side (transcoders on an MLP) vs the
                                method's `read_directions(site)`: best / matched-pair |cos|
    mmcs_colwise, ml2r_colwise  parameter space, only where every truth is one column (TMS)
    dense_cos, dense_l2r, dense_rank        (rank-k "dense" mechanisms: mean, mean, sum over them)
    l0_true                     mean Σ rank of active scored mechanisms per `data` input (the
                                scored sites of the recovery space only; also per space and site)
    l0, n_alive, n_alive_by_site{site: int}, n_components, dead_frac     (all sites, `data`/`onehot`)
    faithfulness                MSE (KL for logits) of forward_with(all on) vs the target on `data`
    pgd_faithfulness, pgd_steps the same error under the worst admissible setting of what the method
                                calls inactive, found by pgd_steps of projected gradient ascent
                                (metrics/pgd.py); also sites.<site> (that site attacked alone)
    shrinkage                   only for methods whose `reconstruct` is non-empty (`onehot`)
    ablation_specificity        mean over the recovery space's matched pairs
    absorption, absorption_data only when truth.hierarchy is non-empty: over (parent, child) pairs,
                                how often the child's matched component fires while the parent's
                                does not, on the `hierarchy` probe set / on `data` (absorption.py)
    latent_f1, latent_precision, latent_recall   activation space, SAELens's synthetic-benchmark
                                definition: every latent vs its closest true feature on `data`,
                                averaged over latents (latent_f1.py); also in spaces.activation
    n_features, represented[list], n_represented, truth_notes[list]
    unscored_sites{space: [site]}   truth sites left out (not decomposed / dense-only, see score.py)
    spaces.<parameter|activation>.<recovery key>    every present space
    sites.<site>.<key>          per site: recovery_space + its recovery keys (one space per site:
                                the top one where the site has it), l0, n_alive, n_components,
                                dead_frac, shrinkage, ablation_specificity, pgd_faithfulness, absorption,
                                absorption_data, latent_f1, latent_precision, latent_recall

Recovery keys = n_true, true_rank, l0_true, mmcs, mcc, uniqueness, coverage, activity_f1,
activity_f1_data, ml2r, mmcs_colwise, ml2r_colwise, dense_cos, dense_l2r, dense_rank.
Keys whose value is undefined are absent, never 0. `Score.matches` lists every Hungarian pair;
`Score.tensors` holds `similarity.<space>.<site>` [n_true, C] and `onehot_activity.<site>`
[n_onehot, C]. `seed_stability(dec_a, dec_b, x=None)` is the bench-level stability metric.
"""

from __future__ import annotations

from mechscope.metrics.eval_sets import EVAL_DATA_SEED, EVAL_DATA_SIZE, EvalSets, eval_sets
from mechscope.metrics.result import Match, Score
from mechscope.metrics.score import score
from mechscope.metrics.stability import seed_stability

__all__ = [
    "EVAL_DATA_SEED",
    "EVAL_DATA_SIZE",
    "EvalSets",
    "Match",
    "Score",
    "eval_sets",
    "score",
    "seed_stability",
]
