"""The page around the figures: style, the small script behind the controls, HTML helpers.

The script draws the figures (those near the viewport first, then the rest one by one) and
restyles them from the controls: which trials are shown (all, the best K, one trial), an
exponential smoothing of the training curves (as TensorBoard's, debiased) and a log y axis.
Every point carries its trial id in `customdata` (see figures.py); figures that smoothing and
the log axis apply to have the class `curves`.
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass
from pathlib import Path

THUMBNAIL = 384  # the longest side of an embedded image, in pixels
RELOAD_SECONDS = 30  # how often an open live page reloads itself


@dataclass
class LiveState:
    """What a page built while its sweep runs says and does: how many trials the sweep will run,
    and how often the page reloads."""

    total_trials: int
    reload_seconds: int = RELOAD_SECONDS


CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
main{padding:0 1.5em 2em}
nav.top{position:sticky;top:0;z-index:10;background:#263238;color:#fff;padding:.5em 1.5em;font-size:14px}
nav.top a{color:#cfd8dc;margin-right:1.2em}
section.experiment{border-top:3px solid #263238;margin-top:1.5em}
h1{font-size:1.5em;margin:.6em 0 .2em} h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;font-size:13px;background:#fff}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#eceff1} table.board tr{cursor:pointer} table.board tr.top td{background:#fffde7}
table.board tr.picked td{background:#e3f2fd} table.board td.num{text-align:right;font-variant-numeric:tabular-nums}
.board-wrap{max-height:460px;overflow:auto;border:1px solid #ddd;display:inline-block;max-width:100%}
.st{border-radius:3px;padding:0 4px;font-size:12px;white-space:nowrap}
.st-finished{background:#c8e6c9}.st-stopped-early{background:#ffe0b2}.st-errored{background:#ffcdd2}
.st-running{background:#bbdefb}.st-interrupted{background:#e1bee7}.st-pending{background:#eee}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 1em;font-size:14px}
.facts dt{font-weight:600} .facts dd{margin:0}
code{background:#eceff1;padding:0 3px;border-radius:3px;font-size:12.5px}
pre{background:#eceff1;padding:.5em;font-size:12.5px;overflow:auto}
.controls{position:sticky;top:2.2em;z-index:5;background:#fafafaee;padding:.4em 0;font-size:14px;border-bottom:1px solid #ddd}
.controls label{margin-right:1.5em}
.grids{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:6px}
figure img{image-rendering:pixelated;width:256px;display:block}
figure.wide img{width:512px}
figcaption{font-size:12px;max-width:256px;margin-top:4px}
figure.wide figcaption{max-width:512px}
table.board tr.moved td{background:#fff3e0} b.moved{color:#e65100}
.note{color:#555;font-size:13px} nav.top .stale{color:#ffcc80}
.plot{background:#fff;border:1px solid #ddd;margin:.5em 0}
"""

SCRIPT = r"""
(function () {
  var CONFIG = {displaylogo: false, responsive: true};
  var started = performance.now(), times = {};
  function plots(section) { return Array.from(section.querySelectorAll('.js-plotly-plot')); }
  // Each point's trial id is in customdata; a trace may hold several trials' curves, separated
  // by null points. Keep the points of the shown trials, smooth each trial's run on its own;
  // per-point marker sizes and colors follow their points.
  function view(tr, keep, w, lines) {
    var marker = tr.marker || {};
    if (!tr._raw) tr._raw = {x: tr.x.slice(), y: tr.y.slice(), ids: tr.customdata.slice(),
                             size: Array.isArray(marker.size) ? marker.size.slice() : null,
                             color: Array.isArray(marker.color) ? marker.color.slice() : null};
    var r = tr._raw, out = {x: [], y: [], ids: [], size: [], color: []}, last = null, acc = 0, n = 0;
    function push(i, v) {
      out.x.push(i < 0 ? null : r.x[i]); out.y.push(v); out.ids.push(i < 0 ? null : r.ids[i]);
      if (r.size) out.size.push(i < 0 ? 0 : r.size[i]);
      if (r.color) out.color.push(i < 0 ? null : r.color[i]);
    }
    for (var i = 0; i < r.x.length; i++) {
      var id = r.ids[i], v = r.y[i];
      if (id === null || id === undefined || !keep(id)) continue;
      if (id !== last) {
        if (last !== null && lines) push(-1, null);
        last = id; acc = 0; n = 0;
      }
      if (w && v !== null) { acc = w * acc + (1 - w) * v; n++; v = acc / (1 - Math.pow(w, n)); }
      push(i, v);
    }
    return out;
  }
  function state(section) {
    return {pick: section.querySelector('select.show').value, top: JSON.parse(section.dataset.top),
            w: parseFloat(section.querySelector('input.smooth').value), log: section.querySelector('input.logy').checked};
  }
  function restyle(section, gd) {
    var s = state(section), curves = gd.classList.contains('curves');
    var keep = function (id) { return s.pick === 'all' || (s.pick === 'top' ? s.top.indexOf(id) >= 0 : id === s.pick); };
    var update = {x: [], y: [], customdata: [], 'marker.size': [], 'marker.color': []}, idx = [];
    gd.data.forEach(function (tr, i) {
      if (!Array.isArray(tr.customdata) || tr.type !== 'scatter') return;
      var smooth = curves && tr.mode === 'lines' ? s.w : 0;
      var v = view(tr, keep, smooth, tr.mode !== 'markers');
      idx.push(i); update.x.push(v.x); update.y.push(v.y); update.customdata.push(v.ids);
      update['marker.size'].push(tr._raw.size ? v.size : (tr.marker || {}).size);
      update['marker.color'].push(tr._raw.color ? v.color : (tr.marker || {}).color);
    });
    if (idx.length) Plotly.restyle(gd, update, idx);
    if (curves) {
      var axes = {};  // the y axes that hold traces (an empty subplot cell's axis can't be changed)
      gd.data.forEach(function (tr) { axes['yaxis' + (tr.yaxis || 'y').slice(1) + '.type'] = s.log ? 'log' : 'linear'; });
      Plotly.relayout(gd, axes);
    }
  }
  function changed(section) {
    var s = state(section);
    return s.pick !== 'all' || s.w !== 0 || s.log;
  }
  function apply(section) {
    var pick = section.querySelector('select.show').value;
    section.querySelector('span.smooth-value').textContent = state(section).w.toFixed(2);
    plots(section).forEach(function (gd) { restyle(section, gd); });
    section.querySelectorAll('table.board tr[data-trial]').forEach(function (tr) {
      tr.classList.toggle('picked', tr.dataset.trial === pick);
    });
  }
  // Figures are drawn when they come near the viewport, and the rest one by one after that,
  // so the first screen is up quickly even for a sweep of hundreds of trials.
  function render(div) {
    if (!div._drawn) {
      var spec = JSON.parse(document.querySelector('script[data-for="' + div.id + '"]').textContent);
      var t = performance.now();
      div._drawn = Plotly.newPlot(div, spec.data, spec.layout, CONFIG).then(function () {
        times[div.id] = Math.round(performance.now() - t);
        var section = div.closest('section.experiment');
        if (section && section.querySelector('.controls') && changed(section)) restyle(section, div);
      });
    }
    return div._drawn;
  }
  // The reader's place (scroll, and each section's trials, smoothing and log axis) is kept in
  // sessionStorage as the page goes, and put back when it comes again: after a live page's
  // reload, or when the final page replaces the live one.
  var PLACE = 'dashboard-place:' + location.pathname;
  function savePlace() {
    var place = {scroll: window.scrollY, sections: {}};
    document.querySelectorAll('section.experiment').forEach(function (section) {
      if (section.querySelector('.controls')) place.sections[section.id] = state(section);
    });
    try { sessionStorage.setItem(PLACE, JSON.stringify(place)); } catch (e) {}
  }
  function restorePlace() {
    var place = null;
    try { place = JSON.parse(sessionStorage.getItem(PLACE) || 'null'); } catch (e) {}
    if (!place) return;
    Object.keys(place.sections || {}).forEach(function (id) {
      var section = document.getElementById(id), s = place.sections[id];
      if (!section || !section.querySelector('.controls')) return;
      var select = section.querySelector('select.show');
      if (Array.from(select.options).some(function (o) { return o.value === s.pick; })) select.value = s.pick;
      section.querySelector('input.smooth').value = s.w;
      section.querySelector('input.logy').checked = s.log;
      apply(section);  // the figures drawn later take it up as they are drawn (render)
    });
    window.scrollTo(0, place.scroll || 0);
  }
  // A live page reloads itself while its sweep runs; one not rebuilt for ten reload periods
  // (its sweep's driver went away) stops and says so.
  function reloadWhileLive() {
    var every = parseInt(document.body.dataset.reload || '0', 10);
    if (!every) return;
    var built = parseInt(document.body.dataset.built, 10) * 1000;
    if (Date.now() - built > 10 * every * 1000) {
      var note = document.createElement('span');
      note.className = 'stale';
      note.textContent = ' (not rebuilt since ' + new Date(built).toLocaleTimeString() +
                         ': is the sweep still running? this page no longer reloads)';
      document.querySelector('nav.top').appendChild(note);
      return;
    }
    window.dashboardReloadAt = Date.now() + every * 1000;
    setTimeout(function () { savePlace(); location.reload(); }, every * 1000);
  }
  function setup() {
    if ('scrollRestoration' in history) history.scrollRestoration = 'manual';
    window.addEventListener('pagehide', savePlace);
    document.querySelectorAll('section.experiment').forEach(function (section) {
      var controls = section.querySelector('.controls');
      if (!controls) return;
      // the slider as it moves; the selector and the box once changed
      controls.addEventListener('input', function (e) { if (e.target.type === 'range') apply(section); });
      controls.addEventListener('change', function (e) { if (e.target.type !== 'range') apply(section); });
      section.querySelectorAll('table.board tr[data-trial]').forEach(function (tr) {
        tr.addEventListener('click', function () {
          var select = section.querySelector('select.show');
          select.value = select.value === tr.dataset.trial ? 'all' : tr.dataset.trial;
          apply(section);
        });
      });
    });
    restorePlace();
    reloadWhileLive();
    var lazy = Array.from(document.querySelectorAll('div.lazy-plot'));
    if ('IntersectionObserver' in window) {
      var observer = new IntersectionObserver(function (entries) {
        entries.forEach(function (e) { if (e.isIntersecting) { observer.unobserve(e.target); render(e.target); } });
      }, {rootMargin: '600px'});
      lazy.forEach(function (div) { observer.observe(div); });
    }
    var i = 0;
    function next() {
      if (i >= lazy.length) {
        times.allPlots = Math.round(performance.now() - started);
        window.dashboardTimes = times;
        window.dashboardReady = true;
        return;
      }
      render(lazy[i++]).then(function () { setTimeout(next, 0); });
    }
    setTimeout(next, 0);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', setup); else setup();
})();
"""


def esc(value) -> str:
    return html.escape(str(value))


def thumbnail(path: Path, longest: int = THUMBNAIL) -> str | None:
    """A PNG as a data: URI, shrunk so its longest side is at most `longest` pixels; grey images
    stored as one channel (torchvision saves grids as RGB), half the bytes."""
    from PIL import Image, ImageChops, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "RGB":
                r, g, b = image.split()
                if ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(g, b).getbbox() is None:
                    image = r
            if max(image.size) > longest:
                scale = longest / max(image.size)
                image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                     Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
    except (OSError, UnidentifiedImageError, ValueError):
        return None  # missing, or being written right now
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_figure(path: Path, caption: str, wide: bool = False) -> str:
    uri = thumbnail(path)
    if not uri:
        return ""
    return (f'<figure{" class=wide" if wide else ""}><img src="{uri}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def facts(rows: list[tuple[str, str]]) -> str:
    """A two-column list; values are HTML already."""
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def plot_div(fig, div_id: str, classes: str = "") -> str:
    """A Plotly figure as an empty div + its JSON; the page's script draws it (plotly.js is inlined once)."""
    payload = fig.to_json().replace("</", "<\\/")  # never close the script element early
    height = fig.layout.height or 450
    return (f'<div class="plot"><div id="{div_id}" class="lazy-plot {classes}" style="height:{height}px"></div>'
            f'<script type="application/json" data-for="{div_id}">{payload}</script></div>')


def document(title: str, nav: str, body: str, reload_seconds: int | None = None) -> str:
    """The whole page; `reload_seconds`: a live page's, which reloads itself that often."""
    from plotly.offline import get_plotlyjs

    live = f' data-reload="{int(reload_seconds)}" data-built="{int(time.time())}"' if reload_seconds else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head>"
            f'<body{live}><nav class="top">{nav}</nav><main>{body}</main><script>{SCRIPT}</script></body></html>')
