"""Latent dashboards: the numbers (planted latents), and the pages rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mechscope.decompose.dictionary import TopKOptions
from mechscope.decompose.sae import train_sae
from mechscope.real.causal_lm import CORPUS, corpus_windows, local_lm
from mechscope.real.latents import dashboard_data, latent_cards, unembedding
from mechscope.real.models import LoadedModel, OutputModel, load_model
from mechscope.report.dashboard import write_dashboard

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


class _Tok:
    """A stand-in tokenizer: token i is the text f"t{i} "."""

    def decode(self, ids: list[int]) -> str:
        return "".join(f"t{i} " for i in ids)


def test_planted_latent_card() -> None:
    ids = torch.arange(6 * 20).view(6, 20) % 50  # (n_seq, T)
    acts = torch.zeros(6, 20, 3)
    acts[..., 0] = (ids == 7).float() * 2.0  # latent 0 fires exactly on token 7
    acts[2, 5, 1], acts[4, 9, 1] = 0.5, 3.0  # latent 1 fires twice; latent 2 never
    W_U = torch.eye(50, 4)  # token v's unembedding is e_v for v < 4
    dirs = torch.tensor([[0.0, 0, 1, 0], [1.0, 0, 0, 0], [0, 0, 0, 0]])
    cards = latent_cards(acts, ids, _Tok(), top_k=4, before=3, after=2, directions=dirs, unembed=(W_U, None))
    c0, c1, c2 = cards
    assert c0.frequency == pytest.approx(float((ids == 7).float().mean()))
    assert all(ctx.tokens[ctx.peak] == "t7 " for ctx in c0.contexts) and len(c0.contexts) == 3  # seqs 0, 2, 5 hold it
    assert sum(c0.hist_counts) == int((ids == 7).sum()) and c0.max_act == 2.0
    assert [ctx.seq for ctx in c1.contexts] == [4, 2] and c1.contexts[0].acts[c1.contexts[0].peak] == 3.0
    assert len(c1.contexts[0].tokens) == 6  # 3 before, the peak, 2 after
    assert c0.promoted[0][0] == "t2 " and c1.promoted[0][0] == "t0 "
    assert c2.frequency == 0 and c2.contexts == [] and sum(c2.hist_counts) == 0
    with pytest.raises(ValueError, match="expected \\[n_seq, seq_len, C\\]"):
        latent_cards(acts[0], ids, _Tok())


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHSCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "lm-cache"))
        return load_model(local_lm(CORPUS, "tiny", seed=0).path)


@pytest.fixture(scope="module")
def dashboard(lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = OutputModel(lm.model, True)
    train = corpus_windows(lm.tokenizer, CORPUS, 32, split="train", block=256)
    site = "transformer.h.1"
    dec = train_sae(model, [train[i : i + 32] for i in range(0, 512, 32)], site,
                    TopKOptions(n_latents=64, k=4, steps=100, batch_size=256, buffer_size=4096))  # fmt: skip
    held = corpus_windows(lm.tokenizer, CORPUS, 32, split="held_out", block=256)[:16]
    data = dashboard_data(dec, held, lm.tokenizer, site, "sae-topk", {"ce_loss_recovered": 0.9, "fve": 0.8},
                          unembed=unembedding(lm.model))  # fmt: skip
    return write_dashboard(data, tmp_path_factory.mktemp("dash")).parent


def test_dashboard_files(dashboard: Path) -> None:
    index = (dashboard / "index.html").read_text()
    assert index.count("<tr data-id=") == 64 and "ce_loss_recovered" in index
    pages = sorted(dashboard.glob("latents/*.html"))
    assert pages and len(pages) <= 64
    page = pages[0].read_text()
    assert "Top-activating contexts" in page and "<svg class='hist'" in page and "Top promoted tokens" in page
    assert "http://" not in index + page and "https://" not in index + page  # nothing fetched


def _dump_dom(url: str, tmp: Path) -> str:
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp}", "--virtual-time-budget=2000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium)")
def test_dashboard_renders_sorts_and_searches_in_chromium(dashboard: Path, tmp_path: Path) -> None:
    index = (dashboard / "index.html").as_uri()
    dom = _dump_dom(index + "?sort=frequency&order=desc", tmp_path / "p1")
    assert 'data-ready="1"' in dom  # the page's script ran
    assert 'data-sort="frequency"' in dom and 'data-order="desc"' in dom
    freqs = [float(v) for v in re.findall(r"<tr data-id=\"\d+\"[^>]*>\s*<td[^>]*>.*?</td>\s*<td class=\"num\" data-v=\"([^\"]+)\"", dom)]
    assert len(freqs) == 64 and freqs == sorted(freqs, reverse=True) and freqs[0] > 0
    dom = _dump_dom(index + "?q=1", tmp_path / "p2")
    rows = re.findall(r"<tr data-id=\"(\d+)\"( style=\"display: none;\")?", dom)
    shown = {i for i, hidden in rows if not hidden}
    assert shown == {str(i) for i in range(64) if str(i).startswith("1")}
    assert 'data-shown="11"' in dom  # 1, 10–19
    page = sorted(dashboard.glob("latents/*.html"))[0].as_uri()
    dom = _dump_dom(page, tmp_path / "p3")
    assert dom.count("class=\"ctx\"") >= 1 and "<svg class=\"hist\"" in dom and "<rect class=\"bar\"" in dom
    assert re.search(r"<table class=\"promoted\">.*<span class=\"tok chip\">", dom, re.S)
