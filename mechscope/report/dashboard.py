"""Latent dashboards: static HTML pages to read what each latent / SPD component of an LM site means.

    write_dashboard(data, "run/dashboard")    # → run/dashboard/index.html, run/dashboard/latents/<id>.html

- `index.html`: the run's numbers (ce_loss_recovered, kl_spliced, FVE, L0, dead fraction) and one
  row per latent — id, firing frequency, max activation, the token at its strongest context, its
  top promoted tokens — sortable by any column (click a header) and searchable by id (the box, or
  `index.html?q=17`; `?sort=frequency&order=desc` sets the order from the address);
- `latents/<id>.html`, one per latent that fires: its top-activating contexts with each token
  highlighted by activation (hover: the value), an activation histogram (inline SVG), its firing
  frequency, and its top promoted and suppressed tokens.

Self-contained (inline CSS, a few lines of JS, no external files, nothing fetched), every file
written atomically. The numbers come from `mechscope.real.latents.dashboard_data`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from mechscope.files import atomic_text
from mechscope.real.latents import Context, DashboardData, LatentCard

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1d2330;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 8px}
.note{color:#5b6475;font-size:13px} a{color:#1f5fbf;text-decoration:none}
table{border-collapse:collapse;font-size:13px} th,td{padding:3px 9px;border-bottom:1px solid #e4e7ee;text-align:left}
th{background:#f3f5f9;cursor:pointer;user-select:none;position:sticky;top:0} th.sorted-desc:after{content:" ▼"}
th.sorted-asc:after{content:" ▲"} td.num{text-align:right;font-variant-numeric:tabular-nums}
.metrics td{font-variant-numeric:tabular-nums} #search{font-size:14px;padding:4px 8px;width:220px;margin:8px 0}
.tok{white-space:pre;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;border-radius:2px;padding:1px 0}
.chip{background:#eef1f6;border-radius:3px;padding:1px 3px;margin-right:4px}
.peak{outline:1.5px solid #c2410c} .ctx{margin:3px 0;line-height:1.9}
.ctxval{display:inline-block;width:64px;color:#5b6475;font-size:12px;font-variant-numeric:tabular-nums}
.cols{display:flex;gap:36px;flex-wrap:wrap} .pos{color:#166534} .negv{color:#991b1b}
.bar{fill:#e8843c} .axis{stroke:#8a93a6;stroke-width:1} svg text{font-size:10px;fill:#5b6475}
"""

INDEX_JS = """
(function(){
  const table=document.getElementById('latents'), body=table.tBodies[0], search=document.getElementById('search');
  const heads=[...table.tHead.rows[0].cells];
  function sortBy(key, order){
    const i=heads.findIndex(h=>h.dataset.key===key); if(i<0) return;
    const rows=[...body.rows], num=heads[i].dataset.type==='num', sign=order==='asc'?1:-1;
    rows.sort((a,b)=>{const x=a.cells[i].dataset.v, y=b.cells[i].dataset.v;
      return sign*(num? (parseFloat(x)-parseFloat(y)) : x.localeCompare(y)) || (parseInt(a.dataset.id)-parseInt(b.dataset.id));});
    rows.forEach(r=>body.appendChild(r));
    heads.forEach(h=>h.classList.remove('sorted-asc','sorted-desc')); heads[i].classList.add('sorted-'+order);
    table.dataset.sort=key; table.dataset.order=order;
  }
  function filter(q){
    q=q.trim(); let shown=0;
    for(const r of body.rows){const ok=!q || r.dataset.id===q || r.dataset.id.startsWith(q);
      r.style.display=ok?'':'none'; if(ok) shown++;}
    document.getElementById('shown').textContent=shown; table.dataset.shown=shown;
  }
  heads.forEach(h=>h.addEventListener('click',()=>{
    const order=(table.dataset.sort===h.dataset.key && table.dataset.order==='desc')?'asc':'desc'; sortBy(h.dataset.key, order);}));
  search.addEventListener('input',()=>filter(search.value));
  const p=new URLSearchParams(location.search);
  sortBy(p.get('sort')||'frequency', p.get('order')||'desc');
  if(p.get('q')){search.value=p.get('q');} filter(search.value);
  document.body.dataset.ready='1';
})();
"""


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _tok(text: str) -> str:
    """A token as visible text: newlines and tabs drawn, spaces kept (white-space: pre)."""
    return html.escape(text.replace("\n", "↵").replace("\t", "⇥"))


def _context_html(ctx: Context, scale: float) -> str:
    spans = []
    for i, (t, a) in enumerate(zip(ctx.tokens, ctx.acts, strict=True)):
        alpha = min(1.0, max(0.0, a / scale)) if scale > 0 else 0.0
        cls = "tok peak" if i == ctx.peak else "tok"
        spans.append(f"<span class='{cls}' style='background:rgba(232,132,60,{alpha:.3f})' title='{a:.4g}' "
                     f"data-act='{a:.4g}'>{_tok(t)}</span>")  # fmt: skip
    return f"<div class='ctx'><span class='ctxval'>{ctx.acts[ctx.peak]:.3g}</span>{''.join(spans)}</div>"


def histogram_svg(counts: list[int], edges: list[float], width: int = 360, height: int = 140) -> str:
    """Bars of `counts` over `edges` as an inline SVG (a log-free count axis, labelled ends)."""
    pad, n = 26, len(counts)
    top = max(counts) if counts and max(counts) > 0 else 1
    bw = (width - 2 * pad) / max(1, n)
    bars = []
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        bars.append(f"<rect class='bar' x='{pad + i * bw:.1f}' y='{height - pad - h:.1f}' width='{max(1.0, bw - 1):.1f}' "
                    f"height='{h:.1f}'><title>[{edges[i]:.3g}, {edges[i + 1]:.3g}): {c}</title></rect>")  # fmt: skip
    axis = (f"<line class='axis' x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}'/>"
            f"<text x='{pad}' y='{height - pad + 13}'>0</text>"
            f"<text x='{width - pad}' y='{height - pad + 13}' text-anchor='end'>{edges[-1]:.3g}</text>"
            f"<text x='{pad - 4}' y='{pad}' text-anchor='end'>{top}</text>")  # fmt: skip
    return f"<svg class='hist' width='{width}' height='{height}' role='img'>{''.join(bars)}{axis}</svg>"


def _logit_table(rows: list[tuple[str, float]], cls: str, label: str) -> str:
    body = "".join(f"<tr><td><span class='tok chip'>{_tok(t)}</span></td><td class='num {cls}'>{v:+.3f}</td></tr>" for t, v in rows)
    return f"<div><h2>{label}</h2><table class='{label.split()[1].lower()}'>{body}</table></div>"


def latent_page(data: DashboardData, card: LatentCard, prev_id: int | None, next_id: int | None) -> str:
    scale = card.max_act if card.max_act > 0 else 1.0
    nav = " · ".join(
        ["<a href='../index.html'>all latents</a>"]
        + ([f"<a href='{prev_id}.html'>← {prev_id}</a>"] if prev_id is not None else [])
        + ([f"<a href='{next_id}.html'>{next_id} →</a>"] if next_id is not None else [])
    )
    contexts = "".join(_context_html(c, scale) for c in card.contexts) or "<p class='note'>never fires on this text</p>"
    logits = ""
    if card.promoted:
        logits = f"<div class='cols'>{_logit_table(card.promoted, 'pos', 'Top promoted tokens')}" \
                 f"{_logit_table(card.suppressed, 'negv', 'Top suppressed tokens')}</div>"  # fmt: skip
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>latent {card.id} · {html.escape(data.title)}</title>"
        f"<style>{CSS}</style></head><body data-latent='{card.id}'>"
        f"<p class='note'>{nav}</p><h1>Latent {card.id}</h1>"
        f"<p class='note'>{html.escape(data.title)} · fires on <b id='frequency'>{card.frequency:.4%}</b> of "
        f"{data.n_tokens} tokens (activity &gt; {data.fire_threshold:g}) · max {card.max_act:.4g} · mean when firing "
        f"{card.mean_act:.4g}</p>"
        f"<h2>Top-activating contexts</h2><div id='contexts'>{contexts}</div>"
        f"<div class='cols'><div><h2>Activation histogram (tokens where it fires)</h2>"
        f"{histogram_svg(card.hist_counts, card.hist_edges)}</div></div>{logits}</body></html>"
    )


def index_page(data: DashboardData) -> str:
    metrics = "".join(f"<tr><td>{html.escape(k)}</td><td class='num'>{_fmt(v)}</td></tr>" for k, v in data.metrics.items()
                      if isinstance(v, int | float | str))  # fmt: skip
    rows = []
    for c in data.latents:
        top_ctx = c.contexts[0].tokens[c.contexts[0].peak] if c.contexts else ""
        promoted = "".join(f"<span class='tok chip'>{_tok(t)}</span>" for t, _ in c.promoted[:3])
        link = f"<a href='latents/{c.id}.html'>{c.id}</a>" if c.contexts else str(c.id)
        rows.append(
            f"<tr data-id='{c.id}'><td class='num' data-v='{c.id}'>{link}</td>"
            f"<td class='num' data-v='{c.frequency:.8g}'>{c.frequency:.3%}</td>"
            f"<td class='num' data-v='{c.max_act:.6g}'>{c.max_act:.3g}</td>"
            f"<td data-v='{html.escape(top_ctx, quote=True)}'><span class='tok chip'>{_tok(top_ctx)}</span></td>"
            f"<td data-v='{html.escape(' '.join(t for t, _ in c.promoted[:3]), quote=True)}'>{promoted}</td></tr>"
        )
    alive = sum(1 for c in data.latents if c.frequency > 0)
    head = ("<tr><th data-key='id' data-type='num'>id</th><th data-key='frequency' data-type='num'>frequency</th>"
            "<th data-key='max' data-type='num'>max act</th><th data-key='top' data-type='text'>top token</th>"
            "<th data-key='promoted' data-type='text'>promotes</th></tr>")  # fmt: skip
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(data.title)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{html.escape(data.title)}</h1><p class='note'>{len(data.latents)} latents, {alive} fire on the "
        f"{data.n_tokens} evaluation tokens. Click a column to sort; search by id.</p>"
        f"<table class='metrics' id='metrics'>{metrics}</table>"
        f"<h2>Latents</h2><input id='search' type='search' placeholder='latent id…' aria-label='search by id'> "
        f"<span class='note'><span id='shown'>{len(data.latents)}</span> shown</span>"
        f"<table id='latents' data-sort='id' data-order='asc'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
        f"<script>{INDEX_JS}</script></body></html>"
    )


def write_dashboard(data: DashboardData, directory: str | Path) -> Path:
    """Write index.html, one page per latent that fires, and data.json (the numbers); returns index.html."""
    out = Path(directory)
    alive = [c for c in data.latents if c.contexts]
    for i, card in enumerate(alive):
        prev_id = alive[i - 1].id if i > 0 else None
        next_id = alive[i + 1].id if i + 1 < len(alive) else None
        atomic_text(out / "latents" / f"{card.id}.html", latent_page(data, card, prev_id, next_id))
    summary = {"title": data.title, "site": data.site, "method": data.method, "n_tokens": data.n_tokens,
               "metrics": data.metrics,
               "latents": [{"id": c.id, "frequency": c.frequency, "max_act": c.max_act} for c in data.latents]}  # fmt: skip
    atomic_text(out / "data.json", json.dumps(summary, indent=1, default=str))
    atomic_text(out / "index.html", index_page(data))
    return out / "index.html"
