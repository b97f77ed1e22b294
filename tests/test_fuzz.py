"""Bad invocations of every command: each exits 2 with one error line on stderr that names the bad
value, never a traceback, and fails fast (issue 18's table). Progress lines may precede the error
where the mistake can only be seen once the target exists (a module name that is not in it).

Each case is (id, argv, a substring the one error line must contain). Files the cases need — a
user's own non-run directory, a truncated results table, an empty corpus — are made by `_files`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mechscope.cli import app

pytestmark = pytest.mark.filterwarnings("ignore")

MINILM = "{minilm}"
CORPUS = "{corpus}"

CASES: list[tuple[str, list[str], str]] = [
    # --- decompose: names, options ---------------------------------------------------------------
    ("unknown-task", ["decompose", "nope-task", "oracle"], "nope-task"),
    ("unknown-method", ["decompose", "tms-5-2", "nope-method"], "nope-method"),
    ("neg-seed", ["decompose", "tms-5-2", "oracle", "--seed", "-1"], "-1"),
    ("steps-zero", ["decompose", "tms-40-10", "sae-topk", "--steps", "0"], "0"),
    ("steps-neg", ["decompose", "tms-40-10", "sae-topk", "--steps", "-5"], "-5"),
    ("steps-huge", ["decompose", "tms-40-10", "sae-topk", "--steps", "100000000000"], "100000000000"),
    ("steps-on-oracle", ["decompose", "tms-5-2", "oracle", "--steps", "10"], "steps"),
    ("device-tpu", ["decompose", "tms-5-2", "oracle", "--device", "tpu"], "tpu"),
    ("device-cuda", ["decompose", "tms-5-2", "oracle", "--device", "cuda"], "cuda"),
    ("seed-text", ["decompose", "tms-5-2", "oracle", "--seed", "abc"], "abc"),
    ("missing-method-arg", ["decompose", "tms-5-2"], "METHOD"),
    ("unknown-option", ["decompose", "tms-5-2", "oracle", "--frobnicate"], "--frobnicate"),
    ("set-no-equals", ["decompose", "tms-5-2", "oracle", "--set", "noequals"], "noequals"),
    ("set-unknown", ["decompose", "tms-5-2", "oracle", "--set", "nope_key=1"], "nope_key"),
    ("set-unknown-task-key", ["decompose", "tms-5-2", "oracle", "--set", "task.nope_key=1"], "nope_key"),
    ("set-unknown-method-key", ["decompose", "tms-5-2", "oracle", "--set", "method.nope_key=1"], "nope_key"),
    ("set-bare-key-in-both", ["decompose", "tms-40-10", "sae-topk", "--set", "lr=0.1"], "lr"),
    ("target-seed-neg", ["decompose", "tms-5-2", "oracle", "--set", "target_seed=-1"], "-1"),
    ("target-seed-text", ["decompose", "tms-5-2", "oracle", "--set", "target_seed=abc"], "abc"),
    ("na-pair", ["decompose", "linear-rnn", "oracle"], "linear-rnn"),
    ("na-transcoder", ["decompose", "tms-5-2", "transcoder-topk"], "transcoder-topk"),
    # --- task settings out of range ----------------------------------------------------------------
    *[(f"tms-{key}-{value}", ["decompose", "tms-5-2", "oracle", "--set", f"task.{key}={value}"], value)
      for key, value in [("feature_prob", "1.5"), ("feature_prob", "-0.1"), ("feature_prob", "0"),
                         ("n_features", "0"), ("n_features", "-3"), ("n_features", "abc"),
                         ("n_hidden", "0"), ("lr", "inf"), ("lr", "nan"), ("lr", "-1"), ("lr", "0"),
                         ("steps", "0"), ("steps", "100000000000"), ("batch_size", "-1"),
                         ("batch_size", "0"), ("weight_decay", "-1"), ("lr_schedule", "linear"),
                         ("init", "foo"), ("identity", "maybe"), ("restarts", "-1")]],
    *[(f"resid-{key}-{value}", ["decompose", "resid-mlp-1l", "oracle", "--set", f"task.{key}={value}"], value)
      for key, value in [("d_mlp", "0"), ("n_layers", "0"), ("feature_prob", "2"), ("d_embed", "-1"),
                         ("lr", "1e400")]],
    *[(f"stress-{key}-{value}", ["decompose", "stress-iid", "oracle", "--set", f"task.{key}={value}"], value)
      for key, value in [("p", "1.5"), ("pair_corr", "2"), ("d", "0"), ("n_features", "1"),
                         ("pairs", "sometimes")]],
    ("synth-p_max", ["decompose", "synth-sae-bench", "oracle", "--set", "task.p_max=2"], "2"),
    ("linear-rnn-radius", ["fixed-points", "linear-rnn", "--set", "task.max_radius=1.5"], "1.5"),
    # --- method settings out of range --------------------------------------------------------------
    *[(f"sae-{key}-{value}", ["decompose", "tms-40-10", "sae-topk", "--set", f"method.{key}={value}"], value)
      for key, value in [("k", "0"), ("k", "-1"), ("lr", "inf"), ("lr", "-0.1"), ("steps", "0"),
                         ("batch_size", "0"), ("n_latents", "0"), ("site", "nope_site")]],
    *[(f"jumprelu-{key}-{value}", ["decompose", "tms-40-10", "sae-jumprelu", "--set", f"method.{key}={value}"],
       value) for key, value in [("l0_coef", "-1"), ("lr", "nan")]],
    *[(f"relu-{key}-{value}", ["decompose", "tms-40-10", "sae-relu", "--set", f"method.{key}={value}"], value)
      for key, value in [("l1_coef", "-1"), ("steps", "-2")]],
    *[(f"spd-{key}-{value}", ["decompose", "tms-5-2", "spd", "--set", f"method.{key}={value}"], value.strip('[]"'))
      for key, value in [("C", "0"), ("modules", '["nope-pattern*"]'), ("preset", "foo"), ("pnorm", "0"),
                         ("importance_coeff", "-1"), ("steps", "0"), ("batch_size", "0"), ("lr", "inf"),
                         ("ci_hidden", "0"), ("leaky_alpha", "2"), ("init", "magic")]],
    ("spd-untied-alias", ["decompose", "tms-5-2", "spd", "--set", 'method.modules=["W_T"]'], "W_T"),
    ("spd-unsupported-module", ["decompose", "boolean-circuits", "spd", "--set", 'method.modules=["layers.0"]'],
     "layers.0"),
    ("pgd-steps-neg", ["decompose", "tms-5-2", "oracle", "--set", "pgd_steps=-1"], "-1"),
    ("pgd-steps-text", ["decompose", "tms-5-2", "oracle", "--set", "run.pgd_steps=two"], "two"),
    ("transcoder-site", ["decompose", "resid-mlp-1l", "transcoder-topk", "--set", "method.site=nope_mlp"],
     "nope_mlp"),
    ("random-n", ["decompose", "tms-5-2", "random", "--set", "method.n_components=0"], "0"),
    # --- decompose: files --------------------------------------------------------------------------
    ("out-is-file", ["decompose", "tms-5-2", "oracle", "--out", "{file}"], "{file}"),
    ("out-users-dir", ["decompose", "tms-5-2", "oracle", "--out", "{users_dir}"], "{users_dir}"),
    ("config-missing", ["decompose", "--config", "{missing}/config.yaml"], "config.yaml"),
    ("config-garbage", ["decompose", "--config", "{garbage_yaml}"], "{garbage_yaml}"),
    # --- fixed-points ------------------------------------------------------------------------------
    ("fp-unknown", ["fixed-points", "nope-target"], "nope-target"),
    ("fp-neg-seed", ["fixed-points", "linear-rnn", "--seed", "-1"], "-1"),
    ("fp-input-text", ["fixed-points", "linear-rnn", "--input", "abc"], "abc"),
    ("fp-input-width", ["fixed-points", "linear-rnn", "--input", "1,2"], "2 values"),
    ("fp-not-recurrent", ["fixed-points", "tms-5-2"], "tms-5-2"),
    ("fp-n-bits-0", ["fixed-points", "flipflop-3bit", "--set", "n_bits=0"], "0"),
    ("fp-n-bits-7", ["fixed-points", "flipflop-3bit", "--set", "n_bits=7"], "7"),
    ("fp-cell", ["fixed-points", "flipflop-3bit", "--set", "cell=transformer"], "transformer"),
    ("fp-generic-n-bits-0", ["fixed-points", "flipflop", "--set", "n_bits=0"], "0"),
    ("fp-generic-n-bits-7", ["fixed-points", "flipflop", "--set", "n_bits=7"], "7"),
    ("fp-generic-cell", ["fixed-points", "flipflop", "--set", "cell=mamba"], "mamba"),
    ("fp-integrator-cell", ["fixed-points", "integrator", "--set", "cell=mamba"], "mamba"),
    ("fp-spd-C-0", ["fixed-points", "flipflop-3bit", "--set", "spd=true", "--set", "spd_C=0"], "spd_C"),
    ("fp-unknown-key", ["fixed-points", "linear-rnn", "--set", "nope_key=1"], "nope_key"),
    ("fp-garbage-checkpoint", ["fixed-points", "{file}"], "{file}"),
    ("fp-out-file", ["fixed-points", "linear-rnn", "--out", "{file}"], "{file}"),
    # --- bench -------------------------------------------------------------------------------------
    ("bench-preset", ["bench", "--preset", "nope-preset", "--out", "{new_dir}"], "nope-preset"),
    ("bench-tasks", ["bench", "--tasks", "nope-task", "--out", "{new_dir}"], "nope-task"),
    ("bench-methods", ["bench", "--methods", "nope-method", "--out", "{new_dir}"], "nope-method"),
    ("bench-seeds-0", ["bench", "--seeds", "0", "--out", "{new_dir}"], "0"),
    ("bench-seeds-neg", ["bench", "--seeds", "-1", "--out", "{new_dir}"], "-1"),
    ("bench-backend", ["bench", "--backend", "slurm", "--out", "{new_dir}"], "slurm"),
    ("bench-workers-0", ["bench", "--workers", "0", "--out", "{new_dir}"], "0"),
    ("bench-workers-neg", ["bench", "--workers", "-2", "--out", "{new_dir}"], "-2"),
    ("bench-device", ["bench", "--device", "tpu", "--out", "{new_dir}"], "tpu"),
    ("bench-set-unknown", ["bench", "--tasks", "tms-5-2", "--set", "nope_key=1", "--out", "{new_dir}"], "nope_key"),
    ("bench-set-range", ["bench", "--tasks", "tms-5-2", "--methods", "oracle", "--set", "task.feature_prob=1.5",
                         "--out", "{new_dir}"], "1.5"),
    ("bench-pgd-steps-neg", ["bench", "--tasks", "tms-5-2", "--methods", "oracle", "--set", "pgd_steps=-3",
                             "--out", "{new_dir}"], "-3"),
    ("bench-empty-tasks", ["bench", "--tasks", ",", "--out", "{new_dir}"], "tasks"),
    ("bench-out-file", ["bench", "--tasks", "tms-5-2", "--methods", "oracle", "--out", "{file}"], "{file}"),
    ("bench-corrupt-results", ["bench", "--tasks", "tms-5-2", "--methods", "oracle", "--seeds", "1",
                               "--out", "{corrupt_bench}"], "results.parquet"),
    ("bench-empty-results", ["bench", "--tasks", "tms-5-2", "--methods", "oracle", "--seeds", "1",
                             "--out", "{empty_bench}"], "results.parquet"),
    # --- report ------------------------------------------------------------------------------------
    ("report-missing", ["report", "{missing}"], "{missing}"),
    ("report-no-results", ["report", "{users_dir}"], "{users_dir}"),
    ("report-corrupt", ["report", "{corrupt_bench}"], "results.parquet"),
    ("report-empty", ["report", "{empty_bench}"], "results.parquet"),
    ("unknown-command", ["frobnicate"], "frobnicate"),
    # --- real models -------------------------------------------------------------------------------
    ("cache-model-missing", ["cache-activations", "--model", "{missing}", "--dataset", CORPUS, "--sites", "x",
                             "--out", "{new_dir}"], "{missing}"),
    ("cache-dataset-missing", ["cache-activations", "--model", MINILM, "--dataset", "{missing}", "--sites", "x",
                               "--out", "{new_dir}"], "{missing}"),
    ("cache-empty-dataset", ["cache-activations", "--model", MINILM, "--dataset", "{empty_file}",
                             "--sites", "encoder.layer.1.output", "--out", "{new_dir}"], "empty.txt"),
    *[(f"cache-{opt}-{value}", ["cache-activations", "--model", MINILM, "--dataset", CORPUS, "--sites",
                                "encoder.layer.1.output", "--out", "{new_dir}", "--tokens", "256", f"--{opt}", value], value)
      for opt, value in [("shard-seqs", "0"), ("tokens", "0"), ("seq-len", "0"), ("dtype", "float8"),
                         ("device", "tpu"), ("tokens", "-5")]],
    ("cache-out-file", ["cache-activations", "--model", MINILM, "--dataset", CORPUS, "--sites",
                        "encoder.layer.1.output", "--out", "{file}"], "{file}"),
    ("cache-sites-unknown", ["cache-activations", "--model", MINILM, "--dataset", CORPUS, "--sites",
                             "nope.module", "--out", "{new_dir}", "--tokens", "256"], "nope.module"),
    ("train-cache-missing", ["train-sae", "--cache", "{missing}", "--site", "x", "--out", "{new_dir}"], "{missing}"),
    ("train-cache-not-cache", ["train-sae", "--cache", "{users_dir}", "--site", "x", "--out", "{new_dir}"],
     "{users_dir}"),
    *[(f"train-{opt}-{value}", ["train-sae", "--cache", "{users_dir}", "--site", "x", "--out", "{new_dir}",
                                f"--{opt}", value], value)
      for opt, value in [("steps", "0"), ("k", "0"), ("n-latents", "0"), ("lr", "inf"), ("batch-size", "0"),
                         ("k", "-3"), ("lr", "-1")]],
    ("train-out-file", ["train-sae", "--cache", "{users_dir}", "--site", "x", "--out", "{file}"], "{file}"),
    ("dm-model-missing", ["decompose-model", "--model", "{missing}", "--dataset", CORPUS, "--modules", "x",
                          "--out", "{new_dir}"], "{missing}"),
    *[(f"dm-{opt}-{value}", ["decompose-model", "--model", MINILM, "--dataset", CORPUS, "--modules",
                             "encoder.layer.3.output.dense", "--out", "{new_dir}", f"--{opt}", value], value)
      for opt, value in [("C", "0"), ("steps", "0"), ("batch-size", "0"), ("importance-coeff", "-1"),
                         ("tokens", "0"), ("device", "tpu")]],
    ("dm-modules-unknown", ["decompose-model", "--model", MINILM, "--dataset", CORPUS, "--modules", "nope.mod*",
                            "--out", "{new_dir}", "--tokens", "256"], "nope.mod*"),
    ("dm-empty-dataset", ["decompose-model", "--model", MINILM, "--dataset", "{empty_file}", "--modules",
                          "encoder.layer.3.output.dense", "--out", "{new_dir}"], "empty.txt"),
    ("planted-model-missing", ["planted", "--model", "{missing}", "--out", "{new_dir}"], "{missing}"),
    ("planted-method", ["planted", "--model", MINILM, "--out", "{new_dir}", "--methods", "nope-method"],
     "nope-method"),
    # causal-LM commands (issue 17): train-lm, lm-decompose, lm-sweep
    ("lm-no-lm-head", ["lm-decompose", "--model", MINILM, "--site", "encoder.layer.3", "--out", "{new_dir}"], "{minilm}"),
    ("lm-site-missing", ["lm-decompose", "--model", "local:tiny", "--site", "transformer.h.9", "--out", "{new_dir}"],
     "transformer.h.9"),
    ("lm-empty-corpus", ["lm-decompose", "--model", "local:tiny", "--site", "transformer.h.1", "--dataset", "{empty_file}",
                         "--out", "{new_dir}"], "empty.txt"),
    ("lm-method", ["lm-decompose", "--site", "transformer.h.1", "--method", "pca", "--out", "{new_dir}"], "pca"),
    ("lm-pgd-steps", ["lm-decompose", "--site", "transformer.h.0.mlp", "--method", "spd", "--pgd-steps", "-1",
                      "--out", "{new_dir}"], "-1"),
    ("lm-pnorm", ["lm-decompose", "--site", "transformer.h.0.mlp", "--method", "spd", "--pnorm", "0",
                  "--out", "{new_dir}"], "0.0"),
    ("lm-device", ["lm-decompose", "--site", "transformer.h.1", "--device", "tpu", "--out", "{new_dir}"], "tpu"),
    ("train-lm-preset", ["train-lm", "--preset", "huge"], "huge"),
    ("train-lm-device", ["train-lm", "--preset", "tiny", "--device", "tpu"], "tpu"),
    ("train-lm-steps", ["train-lm", "--preset", "tiny", "--steps", "0"], "0"),
    ("lm-sweep-key", ["lm-sweep", "--site", "transformer.h.1", "--out", "{new_dir}", "--grid", "bogus_key=1,2"],
     "bogus_key"),
    ("lm-sweep-value", ["lm-sweep", "--site", "transformer.h.1", "--out", "{new_dir}", "--grid", "k=a,b"], "'a'"),
    ("lm-sweep-backend", ["lm-sweep", "--site", "transformer.h.1", "--out", "{new_dir}", "--grid", "k=4",
                          "--backend", "slurm"], "slurm"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from mechscope.real.models import minilm_path

    root = tmp_path_factory.mktemp("fuzz")
    (root / "a-file.txt").write_text("not a directory\n")
    users = root / "users-dir"
    users.mkdir()
    (users / "metrics.json").write_text('{"mine": true}')
    (root / "garbage.yaml").write_text(":::: [not yaml\n\x00")
    (root / "empty.txt").write_text("")
    for name, body in [("corrupt-bench", b"PAR1 this is not a parquet file"), ("empty-bench", b"")]:
        (root / name).mkdir()
        (root / name / "results.parquet").write_bytes(body)
    return {"file": str(root / "a-file.txt"), "users_dir": str(users), "missing": str(root / "missing"),
            "garbage_yaml": str(root / "garbage.yaml"), "empty_file": str(root / "empty.txt"),
            "corrupt_bench": str(root / "corrupt-bench"), "empty_bench": str(root / "empty-bench"),
            "new_dir": str(root / "new-dir"), "cache": str(root / "cache"), "minilm": str(minilm_path()),
            "corpus": str(Path(__file__).parent / "data" / "licenses_corpus.txt")}


def test_the_table_is_large_and_its_ids_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) >= 100 and len(ids) == len(set(ids))


@pytest.mark.parametrize(("argv", "names"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_invocation_is_one_line_exit_2(
    argv: list[str], names: str, files: dict[str, str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", files["cache"])  # one throw-away cache for the whole table
    args = [a.format(**files) for a in argv]
    # CPU-s of this process: the work itself, not the box's load (60 s of wall time failed at load ≥ 14
    # on a 2-core box); a loose wall limit too, for work handed to another process
    start, wall = time.process_time(), time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        app(args)
    elapsed, wall = time.process_time() - start, time.perf_counter() - wall
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("mechscope: ")]
    assert exit_.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("mechscope: error: "), err
    assert "Traceback" not in err
    assert names.format(**files) in lines[0], err
    assert elapsed < 60 and wall < 600, f"took {elapsed:.1f} CPU-s, {wall:.0f} s: the bad value was not caught before the work"
    assert not Path(files["new_dir"]).exists() or not any(Path(files["new_dir"]).iterdir())
