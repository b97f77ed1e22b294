"""The `mechscope` command: the only place that reads argv.

    mechscope tasks | methods
    mechscope decompose TASK METHOD [--seed N] [--steps N] [--device D] [--out DIR] [--set K=V]... [--json]
    mechscope decompose --config RUN/config.yaml [--out DIR] [--set K=V]...   (rerun a recorded run)
    mechscope bench [--preset quick|full|stress|peers] [--tasks A,B] [--methods X,Y] [--seeds N]
                    [--out DIR] [--backend local|ray] [--workers N] [--no-resume]
    mechscope fixed-points TASK|CHECKPOINT [--seed N] [--input U] [--set K=V]... [--out DIR] [--json]
    mechscope report DIR
    mechscope demo

Every error a user can cause is one line on stderr naming the bad value and the allowed ones,
with exit code 2 — never a traceback. Progress bars go to stderr; `--json` keeps stdout for the
metrics JSON alone.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from mechscope.config import ConfigError, check_device
from mechscope.hooks import SiteError


class UserError(Exception):
    """A mistake in the command line: printed as one line, exit code 2."""


class _App(typer.Typer):
    """Typer with one-line errors: usage and config mistakes exit 2 without a traceback."""

    def __call__(self, args: list[str] | None = None, **kwargs: Any) -> Any:
        command = typer.main.get_command(self)
        try:
            code = command.main(args=args, prog_name="mechscope", standalone_mode=False, **kwargs)
        except typer.Abort:
            _die("aborted", 130)
        except typer.TyperException as err:  # click's usage errors (typer vendors click)
            fmt = getattr(err, "format_message", None)
            _die(_with_given_value(" ".join((fmt() if callable(fmt) else str(err)).split()), args), 2)
        except (UserError, ConfigError) as err:
            _die(str(err), 2)
        except KeyError as err:  # registry look-ups raise KeyError("unknown … ; available: …")
            _die(str(err.args[0]) if err.args else repr(err), 2)
        sys.exit(code if isinstance(code, int) else 0)


def _with_given_value(message: str, args: list[str] | None) -> str:
    """click names the option whose value it rejected but not the value: add what the user typed."""
    match = re.match(r"Invalid value for '(--[\w-]+)'", message)
    argv = list(args) if args is not None else sys.argv[1:]
    if match is None:
        return message
    option = match.group(1)
    for i in reversed(range(len(argv))):  # the last occurrence is the one click kept
        token = argv[i]
        if token == option and i + 1 < len(argv):
            return f"{message} (got {argv[i + 1]!r})"
        if token.startswith(option + "="):
            return f"{message} (got {token.split('=', 1)[1]!r})"
    return message


def _die(message: str, code: int) -> NoReturn:
    print(f"mechscope: error: {message}", file=sys.stderr)
    sys.exit(code)


app = _App(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
           help="Decompose networks into mechanisms and score them against known ground truth.")


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show the traceback of a crash (a bug) "
                                              "instead of one line; same as MECHSCOPE_DEBUG=1")] = False) -> None:
    if debug:
        os.environ["MECHSCOPE_DEBUG"] = "1"


@app.command()
def tasks() -> None:
    """List the ground-truth tasks, one line each."""
    from mechscope.zoo import TASKS, get_task

    found = [get_task(name) for name in TASKS]
    width = max((len(t.name) for t in found), default=0)
    fam = max((len(t.family) for t in found), default=0)
    for task in found:
        print(f"{task.name:<{width}}  {task.family:<{fam}}  {task.kind:<13}  {task.summary}")


@app.command()
def methods() -> None:
    """List the methods (decompositions, calibrations, the dynamics analysis), one line each:
    name, family, and `[peer]` for another library's trainer (its summary names our variant)."""
    from mechscope.decompose import METHODS

    names = sorted(METHODS)
    width = max(map(len, names))
    for name in names:
        spec = METHODS[name]
        tag = "[peer] " if spec.peer else ""  # trained by another library's own code
        print(f"{name:<{width}}  {spec.family:<11} {tag}{spec.summary}")


SetOpt = Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE override (task.KEY / method.KEY).")]


@app.command()
def decompose(
    task: Annotated[str | None, typer.Argument(help="task name (see `mechscope tasks`)")] = None,
    method: Annotated[str | None, typer.Argument(help="method name (see `mechscope methods`)")] = None,
    seed: Annotated[int, typer.Option(help="method seed; the target seed defaults to it")] = 0,
    steps: Annotated[int | None, typer.Option(help="training steps of the method")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or mps (default cpu)")] = None,
    out: Annotated[Path | None, typer.Option(help="run directory")] = None,
    set_: SetOpt = None,
    config: Annotated[Path | None, typer.Option(help="a run's config.yaml: rerun exactly that run")] = None,
    force: Annotated[bool, typer.Option(help="write into a non-empty --out that is not a run directory")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print only the metrics JSON on stdout")] = False,
) -> None:
    """Decompose one task's target with one method and score it against the ground truth."""
    from mechscope.bench.grid import _check_writable, pinned_threads
    from mechscope.bench.progress import SingleProgress
    from mechscope.bench.run import CellRequest, check_run_dir, recorded_request, resolve, run_cell

    if device is not None:
        _check_device(device)
    if config is not None:
        request = recorded_request(config, tuple(set_ or ()), device)
        for given, recorded, what in ((task, request.task, "TASK"), (method, request.method, "METHOD")):
            if given is not None and given != recorded:
                raise UserError(f"{what} {given!r} differs from the {recorded!r} of --config {str(config)!r}")
        if seed != 0 or steps is not None:
            raise UserError("--seed and --steps come from --config; change a setting with --set KEY=VALUE")
        _check_device(request.device)
    elif task is None or method is None:
        raise UserError("decompose needs TASK and METHOD (or --config RUN/config.yaml)")
    else:
        request = CellRequest(task, method, seed, tuple(set_ or ()), steps, device or "cpu")
    cell = resolve(request)
    if cell.na_reason is not None:
        raise UserError(f"method {cell.method!r} does not apply to task {cell.task_name!r}: {cell.na_reason}")
    run_dir = out if out is not None else Path("mechscope-runs") / f"{cell.task_name}--{cell.method}--seed-{cell.seed}"
    check_run_dir(run_dir, force)
    _check_writable(run_dir.parent)
    with SingleProgress(f"{cell.task_name} · {cell.method} · seed {cell.seed}") as bar, pinned_threads(THREADS):
        metrics = _guarded(lambda: run_cell(cell, run_dir, bar.update))
    if as_json:
        print(json.dumps(metrics, indent=2))
        print(f"run directory: {run_dir}", file=sys.stderr)
    else:
        _print_summary(metrics)
        print(f"run directory: {run_dir}")


THREADS = 1
"""torch threads of a `decompose` run, as the bench's workers: tiny models gain nothing from more,
and two runs side by side on a small machine would otherwise slow each other many-fold."""


@app.command("fixed-points")
def fixed_points(
    target: Annotated[str, typer.Argument(help="a dynamics task name, a cached target dir or a saved nn.Module")],
    seed: Annotated[int, typer.Option(help="seeds the finder; the target seed defaults to it")] = 0,
    input_: Annotated[str | None, typer.Option("--input", help="one constant input, comma-separated")] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="run directory (none: print only)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print only the metrics JSON on stdout")] = False,
) -> None:
    """Find, classify and score the fixed and slow points of a recurrent network."""
    from mechscope.bench.grid import _check_writable, pinned_threads
    from mechscope.bench.run import check_run_dir
    from mechscope.dynamics.command import run_fixed_points
    from mechscope.dynamics.finder import NoFixedPointsError

    if seed < 0:
        raise UserError(f"--seed must be ≥ 0, got {seed}")
    values = None
    if input_ is not None:
        try:
            values = [float(v) for v in input_.split(",")]
        except ValueError:
            raise UserError(f"--input expects comma-separated numbers, got {input_!r}") from None
    if out is not None:
        check_run_dir(out)
        _check_writable(out.parent)

    def work() -> dict[str, Any]:
        try:
            with pinned_threads(THREADS):
                return run_fixed_points(target, seed=seed, input=values, overrides=list(set_ or ()), out=out)
        except NoFixedPointsError as err:
            _die(str(err), 1)
        except KeyError as err:  # unknown task or checkpoint
            raise UserError(str(err.args[0]) if err.args else repr(err)) from None
        except ValueError as err:  # the analysis's own one-line user errors (non-recurrent model, bad input)
            if isinstance(err, ConfigError):
                raise
            raise UserError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None

    metrics = _guarded(work)
    if as_json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_summary(metrics)
        if out is not None:
            print(f"run directory: {out}")


@app.command()
def bench(
    preset: Annotated[str, typer.Option(
        help="quick, full, stress (issue 9: stress variants + random-init controls, 3 seeds, each method's "
             "sparsity knob swept; add --tasks synth-sae-bench-16k --device cuda for the GPU-size benchmark) or "
             "peers (issue 13: each own SAE variant beside its SAELens / sparsify peer, equal samples seen), "
             "circuits (issue 15: the circuit tasks; their graph metrics come from benchmarks/circuits_table.py)")] = "quick",
    tasks: Annotated[str | None, typer.Option(help="comma-separated task names (default: the preset's)")] = None,
    methods: Annotated[str | None, typer.Option(help="comma-separated method names (default: all)")] = None,
    seeds: Annotated[int | None, typer.Option(help="seeds 0 … N−1 (default: the preset's)")] = None,
    out: Annotated[Path, typer.Option(help="bench directory")] = Path("mechscope-bench"),
    backend: Annotated[str, typer.Option(help="local or ray")] = "local",
    workers: Annotated[int | None, typer.Option(help="parallel worker processes (default: CPU cores)")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="skip finished cells")] = True,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps")] = "cpu",
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE for every cell whose config has KEY")] = None,
    rescore: Annotated[bool, typer.Option(help="re-score the finished cells' saved decompositions with this "
                                               "version's scorer (no refit; fit keys such as samples_seen kept); "
                                               "run the bench again for unfinished ones")] = False,
) -> None:
    """Run tasks × methods × seeds (× knob values where the preset sweeps one) into OUT (results.parquet + report.html)."""
    report_path = _run_bench(out, preset, tasks, methods, seeds, backend, workers, resume, device, set_ or [], rescore)
    print(report_path)


def _run_bench(out: Path, preset: str, tasks: str | None, methods: str | None, seeds: int | None,
               backend: str, workers: int | None, resume: bool, device: str, sets: list[str],
               rescore: bool = False) -> Path:
    from mechscope.bench.grid import parse_list, plan_bench, run_bench
    from mechscope.report import build_report

    if backend not in ("local", "ray"):
        raise UserError(f"unknown backend {backend!r}; available: local, ray")
    if workers is not None and workers <= 0:
        raise UserError(f"--workers must be ≥ 1, got {workers}")
    _check_device(device)
    if backend == "ray":
        from mechscope.bench.ray_backend import check_ray

        check_ray()
    plan = plan_bench(out, preset, parse_list(tasks, "tasks"), parse_list(methods, "methods"), seeds,
                      resume=resume, device=device, sets=sets)
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if rescore:
        if not resume:
            raise UserError("--rescore re-scores finished cells; it cannot be combined with --no-resume")
        from mechscope.bench.rescore import rescore_bench

        _guarded(lambda: rescore_bench(plan))
    else:
        _guarded(lambda: run_bench(plan, workers=n_workers, backend=backend))
    path = build_report(out)
    print(_leaderboard(out))
    return path


def _leaderboard(out: Path) -> str:
    """The verdict in the terminal: task × method headline scores, peers beside ours, not-converged
    and oracle-sized cells marked (`report/leaderboard.py`)."""
    from mechscope.bench.results import RESULTS, peer_of, read_results
    from mechscope.decompose import METHODS
    from mechscope.report.leaderboard import leaderboard

    rows = [r for r in read_results(out / RESULTS) if r.get("status") == "ok" and r.get("mmcs") is not None]
    # tables written before the peer_of column: the registry says
    return leaderboard(rows, {name: own for name in METHODS if (own := peer_of(name))})


@app.command()
def report(directory: Annotated[Path, typer.Argument(help="a bench directory")]) -> None:
    """(Re)build DIR/report.html from the stored results."""
    from mechscope.bench.results import RESULTS, read_results
    from mechscope.report import build_report

    if not (directory / RESULTS).exists():
        raise UserError(f"no {RESULTS} in {str(directory)!r}; run `mechscope bench --out {directory}` first")
    read_results(directory / RESULTS)  # a damaged table is a one-line error, not a traceback
    print(_guarded(lambda: build_report(directory)))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="bench directory")] = Path("mechscope-demo"),
    workers: Annotated[int | None, typer.Option(help="parallel worker processes (default: CPU cores)")] = None,
) -> None:
    """The quick bench into ./mechscope-demo, ending with the report's path."""
    path = _run_bench(out, "quick", None, None, None, "local", workers, True, "cpu", [])
    print(f"report: {path.resolve()}")


# --- helpers -------------------------------------------------------------------------------------


def _check_device(device: str) -> None:
    check_device(device)


def _guarded(work: Any) -> Any:
    """Run the work; a crash inside it is one line (set MECHSCOPE_DEBUG=1 for the traceback)."""
    if os.environ.get("MECHSCOPE_DEBUG"):
        return work()
    try:
        return work()
    except (UserError, ConfigError, SiteError):  # SiteError: a module name the user gave
        raise
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        print(f"mechscope: failed: {type(err).__name__}: {first} (--debug shows the traceback)",
              file=sys.stderr)
        sys.exit(1)


HEADLINE = ("mmcs", "mcc", "coverage", "ml2r", "activity_f1", "faithfulness", "l0", "l0_true", "n_alive",
            "true_rank", "n_stable", "n_saddle", "stable_precision", "stable_recall", "wall_s")


def _print_summary(metrics: dict[str, Any]) -> None:
    print(f"{metrics['task']} · {metrics['method']} · seed {metrics['seed']} (target seed {metrics['target_seed']})")
    for key in HEADLINE:
        value = metrics.get(key)
        if isinstance(value, float):
            print(f"  {key:<14} {value:.4g}")
        elif value is not None:
            print(f"  {key:<14} {value}")


# Real-model commands (cache-activations, train-sae, decompose-model, planted): mechscope/real/command.py
from mechscope.real.command import COMMANDS as _REAL_COMMANDS  # noqa: E402

for _name, _fn in _REAL_COMMANDS.items():
    app.command(_name)(_fn)

# Causal-LM commands (train-lm, lm-decompose): mechscope/real/lm_command.py
from mechscope.real.lm_command import COMMANDS as _LM_COMMANDS  # noqa: E402

for _name, _fn in _LM_COMMANDS.items():
    app.command(_name)(_fn)


@app.command()
def circuit(
    run_dir: Annotated[Path, typer.Argument(help="run directory from `mechscope decompose` (two or more sites)")],
    inputs: Annotated[str, typer.Option(help="evaluation set: onehot or data")] = "onehot",
    out: Annotated[Path | None, typer.Option(help="output directory (default RUN_DIR/circuit)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print only circuit.json on stdout")] = False,
) -> None:
    """Build an attribution graph between the run's components and score it against the true circuit."""
    from mechscope.circuits.command import run_circuit

    try:
        body = run_circuit(run_dir, inputs, out)
    except ValueError as err:
        raise UserError(str(err).splitlines()[0]) from None
    if as_json:
        print(json.dumps(body, indent=2))
    else:
        for key in ("n_edges", "edge_auroc", "cpr", "cmd", "node_recall", "ablation_pearson"):
            if key in body:
                print(f"  {key:<16} {body[key]:.4g}" if isinstance(body[key], float) else f"  {key:<16} {body[key]}")
        print(f"graph: {body['out']}")

@app.command("score")
def score_dictionary(
    task: Annotated[str, typer.Argument(help="task name (see `mechscope tasks`)")],
    sae: Annotated[Path, typer.Option(help="a SAELens SAE dir, a sparsify checkpoint or a mechscope run dir")],
    site: Annotated[str | None, typer.Option(help="module whose output the dictionary reads")] = None,
    out: Annotated[Path | None, typer.Option(help="write metrics.json, figures, tensors and report.html here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print only the metrics JSON on stdout")] = False,
) -> None:
    """Score a dictionary you bring on a zoo task's site, with the same scorer as `decompose`."""
    from mechscope.bench.run import check_task
    from mechscope.score_command import score

    check_task(task)
    metrics = _guarded(lambda: score(sae, task, site=site, out=out))  # a ScoreError is one line, exit 2
    if as_json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_summary({**metrics, "seed": "-"})
    if out is not None:  # on stderr under --json, which keeps stdout for the metrics alone
        print(f"report: {out / 'report.html'}", file=sys.stderr if as_json else sys.stdout)


def main() -> None:
    """The console entry point. It leaves through `os._exit` after running the atexit handlers and
    flushing: a native thread pool (pyarrow's, torch's) still alive at interpreter teardown can abort
    the process ("terminate called without an active exception", exit −6) after its work is done and
    its output written — seen on ~1 in 3 bench exits on this box."""
    try:
        app()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
