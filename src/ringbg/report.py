"""The run report: one self-contained HTML page.

The page embeds its figures as base64 ``data:`` URIs and its style sheet inline; it
loads nothing from the network and runs no JavaScript, so it can be mailed, archived
or opened offline. Every piece of text that comes from the run (observation names,
skip reasons, the config file, paths) is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
import numbers
from html import escape
from pathlib import Path

__all__ = ["write_report"]

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}

_FIGURE_CAPTIONS = {
    "significance": (
        "Significance map",
        "Li &amp; Ma significance of the correlated counts against the ring background. "
        "Dashed contours: excluded regions. Shaded annulus: the ring, for scale.",
    ),
    "excess": (
        "Correlated excess",
        "Excess counts (counts minus ring background) within the correlation radius.",
    ),
    "significance_distribution": (
        "Significance distribution",
        "Pixel significances of the whole map and of the off pixels (outside the "
        "exclusion regions), with the Gaussian fit to the off pixels and N(0, 1).",
    ),
}

_TOTAL_LABELS = [
    ("counts", "Counts (on)", "events in the map, summed over pixels"),
    ("counts_off", "Counts (off)", "events in the rings"),
    ("acceptance", "Acceptance (on)", "background model in the on region"),
    ("acceptance_off", "Acceptance (off)", "background model in the rings"),
    ("background", "Background", "&alpha; &times; counts off"),
    ("excess", "Excess", "counts &minus; background"),
]

_CSS = """
:root {
  --ink: #1d2433; --muted: #5b6577; --line: #dde2ea; --panel: #ffffff;
  --bg: #f3f5f9; --accent: #2b5fa8; --night: #0f1a2e; --good: #1f7a3f; --bad: #a23b2a;
}
* { box-sizing: border-box; }
html { font-size: 15px; }
body {
  margin: 0; background: var(--bg); color: var(--ink);
  font-family: "Segoe UI", "Helvetica Neue", Helvetica, Arial, "DejaVu Sans", sans-serif;
  line-height: 1.45;
}
header {
  background: linear-gradient(135deg, #0b1426 0%, #16284a 60%, #233d6b 100%);
  color: #f4f6fb; padding: 1.6rem 2rem 1.4rem;
}
header h1 { margin: 0; font-size: 1.7rem; font-weight: 600; letter-spacing: 0.01em; }
header h1 .tool { color: #9cc3ff; }
header .meta { margin-top: 0.35rem; color: #c7d3ea; font-size: 0.92rem; }
main { max-width: 1280px; margin: 0 auto; padding: 1.2rem 2rem 2.5rem; }
nav { font-size: 0.9rem; margin: 0.2rem 0 1rem; color: var(--muted); }
nav a { color: var(--accent); text-decoration: none; margin-right: 1rem; }
nav a:hover { text-decoration: underline; }
section {
  background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 1.1rem 1.4rem 1.2rem; margin: 0 0 1.2rem;
  box-shadow: 0 1px 2px rgba(16, 24, 40, 0.04);
}
h2 {
  margin: 0 0 0.8rem; font-size: 1.18rem; font-weight: 600; color: var(--night);
  border-bottom: 1px solid var(--line); padding-bottom: 0.4rem;
}
h3 { margin: 1rem 0 0.5rem; font-size: 1rem; font-weight: 600; color: var(--night); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 0.8rem; }
.card {
  background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 0.8rem 1rem; border-top: 3px solid var(--accent);
}
.card .label { font-size: 0.78rem; text-transform: uppercase; letter-spacing: 0.06em; color: var(--muted); }
.card .value { font-size: 1.45rem; font-weight: 600; margin-top: 0.15rem; font-variant-numeric: tabular-nums; }
.card .sub { font-size: 0.82rem; color: var(--muted); }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 0.6rem; background: #fff; }
figure img { display: block; width: 100%; height: auto; }
figcaption { font-size: 0.86rem; color: var(--muted); margin-top: 0.45rem; }
figcaption b { color: var(--ink); }
.missing { color: var(--bad); font-style: italic; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; padding: 0.38rem 0.6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef2f8; color: var(--night); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.note { color: var(--muted); }
tbody tr:nth-child(even) { background: #fafbfd; }
table.kv { width: auto; min-width: 50%; }
table.kv th { width: 14rem; background: transparent; }
.badge {
  display: inline-block; padding: 0.05rem 0.5rem; border-radius: 999px;
  font-size: 0.78rem; font-weight: 600; letter-spacing: 0.02em;
}
.badge.used { background: #e3f3e8; color: var(--good); }
.badge.skipped { background: #fbe7e3; color: var(--bad); }
tr.skipped td { color: #6d5a57; }
pre {
  background: #0f1a2e; color: #dfe7f5; padding: 0.9rem 1rem; border-radius: 6px;
  overflow-x: auto; font-size: 0.84rem; line-height: 1.4;
  font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace;
}
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.85rem; }
.hash { word-break: break-all; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 1.2rem; }
p.hint { color: var(--muted); font-size: 0.88rem; margin: 0.6rem 0 0; }
footer { text-align: center; color: var(--muted); font-size: 0.82rem; padding: 0 0 2rem; }
@media print {
  body { background: #fff; }
  header { background: #fff; color: #000; border-bottom: 2px solid #000; }
  header .meta, header h1 .tool { color: #000; }
  section { box-shadow: none; break-inside: avoid; }
  nav { display: none; }
}
"""


# --------------------------------------------------------------------------- formatting


def _e(value):
    """HTML-escape any value as text."""
    return escape("" if value is None else str(value), quote=True)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _num(value, digits=None, unit=""):
    """Format a number for a table: thousands separators, NaN and None as a dash."""
    if value is None:
        return "&mdash;"
    if not _is_number(value):
        return _e(value)
    if not math.isfinite(value):
        return "&mdash;"
    if float(value).is_integer() and digits is None and abs(value) < 1e15:
        text = f"{int(value):,}"
    elif digits is not None:
        text = f"{value:,.{digits}f}"
    elif abs(value) >= 1e15 or (value != 0 and abs(value) < 1e-3):
        text = f"{value:.6g}"
    else:
        text = f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.1f}"
    return _e(text) + (f"&nbsp;{_e(unit)}" if unit else "")


def _pm(value, error, digits=4):
    """Format ``value ± error``."""
    if not _is_number(value) or not math.isfinite(value):
        return "&mdash;"
    text = f"{value:.{digits}f}"
    if _is_number(error) and math.isfinite(error):
        text += f" &plusmn; {error:.{digits}f}"
    return text


def _sexagesimal(lon, lat, frame):
    """Extra coordinate strings for a sky position (hms/dms for equatorial frames)."""
    if not (_is_number(lon) and _is_number(lat)):
        return None
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return None
    try:
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        coord = SkyCoord(lon * u.deg, lat * u.deg, frame=str(frame or "icrs").lower())
        if coord.frame.name == "galactic":
            eq = coord.icrs
            return "ICRS " + eq.to_string("hmsdms", precision=1, sep=":")
        text = coord.to_string("hmsdms", precision=1, sep=":")
        gal = coord.galactic
        return f"{text} &nbsp;&middot;&nbsp; l = {gal.l.deg:.3f}&deg;, b = {gal.b.deg:.3f}&deg;"
    except Exception:  # noqa: BLE001 - an unknown frame name only loses the extra line
        return None


def _lon_lat_names(frame):
    if str(frame).lower() == "galactic":
        return "l", "b"
    return "RA", "Dec"


def _data_uri(path):
    path = Path(path)
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{mime};base64,{data}"


# --------------------------------------------------------------------------- sections


def _header(summary, run_date, n_skipped):
    n_obs = summary.get("n_obs")
    version = (summary.get("versions") or {}).get("ringbg")
    meta = [f"Run date {_e(run_date)}"]
    if n_obs is not None:
        meta.append(f"{_num(n_obs)} observation{'s' if n_obs != 1 else ''} used")
    if n_skipped:
        meta.append(f"{n_skipped} skipped")
    if version:
        meta.append(f"ringbg {_e(version)}")
    return (
        "<header>\n"
        '  <h1><span class="tool">ringbg</span> &middot; ring-background sky maps</h1>\n'
        f'  <div class="meta">{" &nbsp;&middot;&nbsp; ".join(meta)}</div>\n'
        "</header>\n"
    )


def _cards(summary, livetime_s):
    maxsig = summary.get("max_significance") or {}
    totals = summary.get("totals") or {}
    off = summary.get("off_distribution") or {}
    cards = [
        ("Observations", _num(summary.get("n_obs")),
         f"{_num(livetime_s / 3600, 2)} h live time" if livetime_s else ""),
        ("Max significance", _num(maxsig.get("value"), 2, "σ"),
         _position_text(maxsig)),
        ("Excess", _num(totals.get("excess"), 1), "counts, whole map"),
        ("Off distribution", f"σ = {_pm(off.get('sigma'), None, 3)}",
         f"μ = {_pm(off.get('mean'), None, 3)} (expected 0 and 1)"),
    ]
    out = ['<div class="cards">']
    for label, value, sub in cards:
        out.append(
            f'<div class="card"><div class="label">{_e(label)}</div>'
            f'<div class="value">{value}</div><div class="sub">{sub}</div></div>'
        )
    out.append("</div>")
    return "\n".join(out)


def _position_text(maxsig):
    lon, lat, frame = maxsig.get("lon"), maxsig.get("lat"), maxsig.get("frame", "icrs")
    if not (_is_number(lon) and _is_number(lat)):
        return ""
    a, b = _lon_lat_names(frame)
    return f"at {a} {_num(lon, 3)}&deg;, {b} {_num(lat, 3)}&deg; ({_e(frame)})"


def _figures_section(figures):
    out = ['<section id="figures">', "<h2>Figures</h2>", '<div class="figures">']
    if not figures:
        out.append('<p class="missing">No figures were made for this run.</p>')
    for name, path in (figures or {}).items():
        title, caption = _FIGURE_CAPTIONS.get(
            name, (str(name).replace("_", " ").capitalize(), "")
        )
        title = _e(title) if name not in _FIGURE_CAPTIONS else title
        path = Path(path)
        if path.is_file():
            body = f'<img src="{_data_uri(path)}" alt="{_e(title)}">'
        else:
            body = f'<p class="missing">Figure file not found: {_e(path.name)}</p>'
        out.append(
            f'<figure id="fig-{_e(name)}">{body}'
            f"<figcaption><b>{title}.</b> {caption}</figcaption></figure>"
        )
    out += ["</div>", "</section>"]
    return "\n".join(out)


def _totals_section(summary):
    totals = summary.get("totals") or {}
    rows = []
    known = set()
    for key, label, note in _TOTAL_LABELS:
        known.add(key)
        if key in totals:
            rows.append(
                f'<tr><th>{_e(label)}</th><td class="num">{_num(totals[key])}</td>'
                f'<td class="note">{note}</td></tr>'
            )
    for key, value in totals.items():
        if key not in known:
            rows.append(
                f'<tr><th>{_e(key)}</th><td class="num">{_num(value)}</td><td></td></tr>'
            )
    alpha = None
    acc, acc_off = totals.get("acceptance"), totals.get("acceptance_off")
    if _is_number(acc) and _is_number(acc_off) and acc_off:
        alpha = acc / acc_off
        rows.append(
            f'<tr><th>&alpha; (mean)</th><td class="num">{_num(alpha)}</td>'
            f'<td class="note">acceptance / acceptance off</td></tr>'
        )
    body = "\n".join(rows) or '<tr><td colspan="3">No totals recorded.</td></tr>'
    return (
        '<div><h3 id="totals">Totals over the map</h3>\n'
        f'<table class="kv"><tbody>\n{body}\n</tbody></table></div>'
    )


def _max_significance_section(summary):
    maxsig = summary.get("max_significance") or {}
    frame = maxsig.get("frame", "icrs")
    a, b = _lon_lat_names(frame)
    rows = [
        f'<tr><th>Significance</th><td class="num">{_num(maxsig.get("value"), 3, "σ")}</td></tr>',
        f'<tr><th>{a}</th><td class="num">{_num(maxsig.get("lon"), 4)}&deg;</td></tr>',
        f'<tr><th>{b}</th><td class="num">{_num(maxsig.get("lat"), 4)}&deg;</td></tr>',
        f'<tr><th>Frame</th><td class="num">{_e(frame)}</td></tr>',
    ]
    extra = _sexagesimal(maxsig.get("lon"), maxsig.get("lat"), frame)
    if extra:
        rows.append(f'<tr><th>Also</th><td class="num mono">{extra}</td></tr>')
    return (
        '<div><h3 id="max-significance">Maximum significance</h3>\n'
        f'<table class="kv"><tbody>\n{chr(10).join(rows)}\n</tbody></table></div>'
    )


def _off_distribution_section(summary):
    off = summary.get("off_distribution") or {}
    rows = [
        f'<tr><th>Mean &mu;</th><td class="num">{_pm(off.get("mean"), off.get("mean_err"))}</td></tr>',
        f'<tr><th>Width &sigma;</th><td class="num">{_pm(off.get("sigma"), off.get("sigma_err"))}</td></tr>',
        f'<tr><th>Off pixels</th><td class="num">{_num(off.get("n_pixels"))}</td></tr>',
    ]
    return (
        '<div><h3 id="off-distribution">Off-region significance distribution</h3>\n'
        f'<table class="kv"><tbody>\n{chr(10).join(rows)}\n</tbody></table>\n'
        '<p class="hint">Gaussian fit to the significances of pixels outside the exclusion '
        "regions (51-bin density histogram, as gammapy&rsquo;s <code>plot_distribution</code>). "
        "Without residual sources and with a correct background, expect &mu; &asymp; 0 and "
        "&sigma; &asymp; 1.</p></div>"
    )


def _merge_observations(observations, summary):
    """Observation rows, plus any skipped observation only listed in the summary."""
    rows = [dict(o) for o in (observations or [])]
    seen = {str(o.get("obs_id")) for o in rows}
    for item in summary.get("skipped") or []:
        if str(item.get("obs_id")) not in seen:
            rows.append({"obs_id": item.get("obs_id"), "status": "skipped",
                         "reason": item.get("reason")})
            seen.add(str(item.get("obs_id")))
    return rows


def _observations_section(rows):
    n_used = sum(1 for o in rows if str(o.get("status", "used")).lower() == "used")
    n_skipped = len(rows) - n_used
    head = (
        "<tr><th>Obs. ID</th><th>Object</th><th class=\"num\">RA [&deg;]</th>"
        "<th class=\"num\">Dec [&deg;]</th><th class=\"num\">Live time [min]</th>"
        "<th class=\"num\">Zenith [&deg;]</th><th>Status</th><th>Reason</th></tr>"
    )
    body = []
    for obs in rows:
        status = str(obs.get("status") or "used").lower()
        cls = "skipped" if status == "skipped" else "used"
        livetime = obs.get("livetime_s")
        livetime_min = livetime / 60 if _is_number(livetime) else None
        body.append(
            f'<tr class="{cls}" id="obs-{_e(obs.get("obs_id"))}">'
            f'<td class="mono">{_e(obs.get("obs_id"))}</td>'
            f"<td>{_e(obs.get('object') or '')}</td>"
            f'<td class="num">{_num(obs.get("ra_deg"), 3)}</td>'
            f'<td class="num">{_num(obs.get("dec_deg"), 3)}</td>'
            f'<td class="num">{_num(livetime_min, 1)}</td>'
            f'<td class="num">{_num(obs.get("zenith_deg"), 1)}</td>'
            f'<td><span class="badge {cls}">{_e(status)}</span></td>'
            f"<td>{_e(obs.get('reason') or '')}</td></tr>"
        )
    if not body:
        body.append('<tr><td colspan="8">No observations listed.</td></tr>')
    return (
        '<section id="observations"><h2>Observations</h2>\n'
        f'<p class="hint" style="margin:0 0 0.6rem">{n_used} used, {n_skipped} skipped.</p>\n'
        f"<table><thead>{head}</thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"
        "</section>"
    )


def _kv_table(mapping, value_class="num"):
    rows = [
        f'<tr><th>{_e(k)}</th><td class="{value_class}">'
        f"{_num(v, 3) if _is_number(v) and not float(v).is_integer() else _e(v)}</td></tr>"
        for k, v in (mapping or {}).items()
    ]
    if not rows:
        rows = ['<tr><td colspan="2">none recorded</td></tr>']
    return '<table class="kv"><tbody>\n' + "\n".join(rows) + "\n</tbody></table>"


def _provenance_section(summary):
    versions = summary.get("versions") or {}
    timings = summary.get("timings") or {}
    inputs = summary.get("inputs") or []
    timing_rows = {k: (f"{v:.2f} s" if _is_number(v) else v) for k, v in timings.items()}
    input_rows = [
        f'<tr><td class="mono">{_e(item.get("path"))}</td>'
        f'<td class="mono hash">{_e(item.get("sha256"))}</td></tr>'
        for item in inputs
    ]
    inputs_html = (
        "<table><thead><tr><th>Input file</th><th>SHA-256</th></tr></thead><tbody>\n"
        + "\n".join(input_rows) + "\n</tbody></table>"
        if input_rows else '<p class="hint">No input checksums recorded.</p>'
    )
    obs_ids = summary.get("obs_ids") or []
    return (
        '<section id="provenance"><h2>Provenance</h2>\n<div class="grid2">'
        f"<div><h3>Software versions</h3>{_kv_table(versions, 'mono')}</div>"
        f"<div><h3>Timings</h3>{_kv_table(timing_rows)}</div></div>\n"
        f"<h3>Input files</h3>{inputs_html}\n"
        f'<h3>Observation IDs used</h3><p class="mono">{_e(", ".join(map(str, obs_ids))) or "&mdash;"}</p>'
        "</section>"
    )


def _config_section(config_text):
    text = config_text if config_text is not None else ""
    return (
        '<section id="config"><h2>Configuration</h2>\n'
        f"<pre>{_e(text.rstrip())}</pre></section>"
    )


# --------------------------------------------------------------------------- public


def write_report(path, summary, config_text, figures, observations):
    """Write the run report as one self-contained HTML file.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Output HTML file (its folder is created if needed).
    summary : dict
        The run summary (``summary.json`` content): ``obs_ids``, ``n_obs``, ``totals``,
        ``max_significance``, ``off_distribution``, ``timings``, ``versions`` and
        optionally ``skipped`` (list of ``{"obs_id", "reason"}``), ``inputs`` (list of
        ``{"path", "sha256"}``) and ``run_date`` (text). Missing keys are shown as
        dashes rather than raising.
    config_text : str
        The configuration file as given by the user; shown verbatim (escaped).
    figures : dict
        ``{name: path}`` of image files, embedded as base64 data URIs in this order.
        Known names (``significance``, ``excess``, ``significance_distribution``) get
        captions.
    observations : list of dict
        One per observation, with keys ``obs_id``, ``object``, ``ra_deg``, ``dec_deg``,
        ``livetime_s``, ``zenith_deg``, ``status`` (``"used"`` or ``"skipped"``) and
        ``reason``. Skipped observations listed only in ``summary["skipped"]`` are
        added.

    Returns
    -------
    path : `~pathlib.Path`
        The written file.
    """
    summary = dict(summary or {})
    run_date = summary.get("run_date") or _dt.datetime.now(_dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC"
    )
    rows = _merge_observations(observations, summary)
    n_skipped = sum(1 for o in rows if str(o.get("status") or "used").lower() != "used")
    livetime_s = sum(
        o["livetime_s"] for o in rows
        if str(o.get("status") or "used").lower() == "used"
        and _is_number(o.get("livetime_s")) and math.isfinite(o["livetime_s"])
    )

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta name=\"generator\" content=\"ringbg\">",
        f"<title>ringbg report &middot; {_e(run_date)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        _header(summary, run_date, n_skipped),
        "<main>",
        '<nav><a href="#figures">Figures</a><a href="#results">Results</a>'
        '<a href="#observations">Observations</a><a href="#config">Configuration</a>'
        '<a href="#provenance">Provenance</a></nav>',
        _cards(summary, livetime_s),
        "<div style=\"height:1.2rem\"></div>",
        _figures_section(figures),
        '<section id="results"><h2>Results</h2><div class="grid2">',
        _totals_section(summary),
        "<div>",
        _max_significance_section(summary),
        _off_distribution_section(summary),
        "</div></div></section>",
        _observations_section(rows),
        _config_section(config_text),
        _provenance_section(summary),
        "</main>",
        f"<footer>Made by ringbg &middot; {_e(run_date)}</footer>",
        "</body>",
        "</html>",
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
