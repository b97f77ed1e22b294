"""How many TMS seeds train a target that represents every feature, per recipe.

    .venv/bin/python benchmarks/tms_seeds.py --task tms-5-2 --recipe published --seeds 0-9

Recipes (all: AdamW, wd 0.01, lr 5e-3 constant, the task's batch and steps):
  published  torch's default nn.Linear init (the SPD reference trainer), one attempt
  xavier     Xavier-normal W and zero bias (the Anthropic notebook), one attempt
  ours       xavier + restarts from derived seeds while a feature is unrepresented (the task default)

Prints one row per seed: features represented, final training-batch loss, held-out loss on a
fixed 65,536-sample set, attempts used, wall time (checkpoint evaluations included), the smallest
‖W[:, i]‖, and with --checkpoints the same at intermediate steps. Trains from scratch (the target cache is not
touched) on one thread, so times compare across rows of one run.
"""

from __future__ import annotations

import argparse
import time

import torch

from mechscope.zoo import get_task
from mechscope.zoo.tms import REPRESENTED_NORM, TMSModel, TMSTask, eval_loss, train_tms

RECIPES = {
    "published": {"init": "reference", "restarts": 0},
    "xavier": {"init": "xavier", "restarts": 0},
    "ours": {},
}


def parse_seeds(spec: str) -> list[int]:
    """'0-9' or '0,3,5' → list of seeds."""
    if "-" in spec:
        lo, hi = spec.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in spec.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="tms-5-2")
    ap.add_argument("--recipe", default="ours", choices=sorted(RECIPES))
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--steps", type=int, default=None, help="override the task's step count")
    ap.add_argument(
        "--checkpoints",
        default="",
        help="comma-separated steps at which to also report n_rep/eval loss of the first attempt "
        "(constant lr: the state at step k equals a k-step run's)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    # pay the one-time optimizer import outside the timings
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])

    base = get_task(args.task)
    assert isinstance(base, TMSTask), f"{args.task} is not a TMS task"
    overrides: dict[str, object] = dict(RECIPES[args.recipe])
    if args.steps is not None:
        overrides["steps"] = args.steps
    cfg = base.config.model_copy(update=overrides)
    task = TMSTask(cfg, base.name, base.summary)
    print(
        f"# {args.task} recipe={args.recipe} init={cfg.init} restarts={cfg.restarts} steps={cfg.steps} batch={cfg.batch_size}"
    )
    print(
        f"{'seed':>4} {'n_rep':>5} {'final_loss':>10} {'eval_loss':>9} {'attempts':>8} {'time_s':>7}  min‖W_i‖"
    )
    n_all, total = 0, 0.0
    seeds = parse_seeds(args.seeds)
    checkpoints = [int(k) for k in args.checkpoints.split(",") if k]
    assert not checkpoints or cfg.lr_schedule == "constant", "checkpoints need a constant lr"
    for seed in seeds:
        model = task.build()
        seen: list[str] = []

        def snapshot(done: int, total: int, model: TMSModel = model, seen: list[str] = seen) -> None:
            if done in checkpoints and len(seen) < len(checkpoints):  # first attempt only
                norms = model.W.weight.detach().norm(dim=0)
                n_rep = int((norms > REPRESENTED_NORM).sum())
                seen.append(f"@{done}: {n_rep} {eval_loss(model, task):.6f}")

        t0 = time.perf_counter()
        info = train_tms(model, task, seed, snapshot)
        dt = time.perf_counter() - t0
        total += dt
        norms = info["feature_norms"]
        assert isinstance(norms, list)
        n_rep = int(info["n_represented"])  # type: ignore[call-overload]
        n_all += n_rep == cfg.n_features
        attempts = info["attempts"]
        assert isinstance(attempts, list)
        print(
            f"{seed:>4} {n_rep:>5} {info['final_loss']:>10.6f} {info['eval_loss']:>9.6f} "
            f"{len(attempts):>8} {dt:>7.1f}  {min(norms):.3f}  {'  '.join(seen)}",
            flush=True,
        )
    print(f"# all {cfg.n_features} features represented on {n_all}/{len(seeds)} seeds; total {total:.0f} s")


if __name__ == "__main__":
    main()
