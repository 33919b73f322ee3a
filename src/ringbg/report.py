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
import re
from html import escape
from pathlib import Path

__all__ = ["write_report"]

_RADIUS_NAME = re.compile(r"^(.*)_([0-9.]+)deg$")

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
        "Dashed contours: excluded regions. Beside the map: the ring (and the correlation "
        "circle), for scale.",
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
    "exclusion": (
        "Exclusion mask",
        "Regions excluded from the background estimate (shaded) over the significance map, "
        "with the catalogue sources excluded.",
    ),
    "counts": ("Correlated counts", "Counts within the correlation radius."),
    "background": (
        "Correlated background",
        "Background counts within the correlation radius (&alpha; &times; counts off).",
    ),
    "flux": (
        "Integral flux",
        "Flux in the energy range for the assumed power law (excess / predicted counts "
        "per unit flux).",
    ),
    "exposure": ("Exposure", "Stacked exposure, mean over the true-energy bins."),
    "alpha": ("&alpha;", "On/off exposure ratio of the ring background."),
    "livetime": (
        "Live time",
        "Live time of the observations whose safe region covers the pixel.",
    ),
}

#: Files of a run linked from the report (relative names), with what they hold;
#: ``maps_<r>deg.fits`` files are found by pattern.
_FILES = [
    ("maps.fits", "sky maps (first correlation radius), one HDU per product"),
    ("maps_bands.fits", "the maps per energy bin"),
    ("stacked_onoff.fits", "stacked on/off dataset (gammapy MapDatasetOnOff.read)"),
    ("exclusion_mask.fits", "exclusion mask (1 = used for the background)"),
    ("summary.json", "the numbers of this report, machine-readable"),
    ("observations", "per-observation on/off datasets"),
]

#: Observation columns shown when a row has them: key, header, digits (None: text).
_OBS_OPTIONAL = [
    ("offset_deg", "Offset [&deg;]", 2),
    ("safe_energy_min_tev", "E<sub>safe</sub> [TeV]", 3),
    ("counts", "Counts", 0),
    ("excess_at_max", "Excess at max", 1),
    ("significance_at_max", "Sig. at max [&sigma;]", 2),
]

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
div.note { background: #fff7e6; border: 1px solid #f0d9a8; border-radius: 6px; padding: 0.6rem 0.9rem; margin: 0 0 0.9rem; font-size: 0.9rem; }
.figures figure.wide { grid-column: 1 / -1; }
ul.files { margin: 0; padding-left: 1.2rem; }
ul.files li { margin: 0.15rem 0; }
ul.files a { color: var(--accent); font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.88rem; }
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


def _figure_html(name, path):
    title, caption = _FIGURE_CAPTIONS.get(
        _base_name(name), (str(name).replace("_", " ").capitalize(), "")
    )
    title = _e(title) if _base_name(name) not in _FIGURE_CAPTIONS else title
    path = Path(path)
    if path.is_file():
        body = f'<img src="{_data_uri(path)}" alt="{_e(title)}">'
    else:
        body = f'<p class="missing">Figure file not found: {_e(path.name)}</p>'
    wide = ' class="wide"' if _base_name(name) == "significance" else ""
    return (f'<figure id="fig-{_e(name)}"{wide}>{body}'
            f"<figcaption><b>{title}.</b> {caption}</figcaption></figure>")


def _radius_suffix(name):
    """``"0.2"`` for a figure ``significance_0.2deg``, else None."""
    match = _RADIUS_NAME.match(str(name))
    return match.group(2) if match else None


def _base_name(name):
    match = _RADIUS_NAME.match(str(name))
    return match.group(1) if match else str(name)


def _figures_section(figures, summary):
    main = {k: v for k, v in (figures or {}).items() if _radius_suffix(k) is None}
    out = ['<section id="figures">', "<h2>Figures</h2>"]
    if summary.get("flux_note"):
        out.append(f'<div class="note" id="flux-note"><b>Flux maps.</b> '
                   f'{_e(summary["flux_note"])}</div>')
    out.append('<div class="figures">')
    if not figures:
        out.append('<p class="missing">No figures were made for this run.</p>')
    out += [_figure_html(name, path) for name, path in main.items()]
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


def _max_significance_block(maxsig, anchor="max-significance"):
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
        f'<div><h3 id="{_e(anchor)}">Maximum significance</h3>\n'
        f'<table class="kv"><tbody>\n{chr(10).join(rows)}\n</tbody></table></div>'
    )


def _max_significance_section(summary):
    return _max_significance_block(summary.get("max_significance") or {})


def _off_distribution_block(off, anchor="off-distribution"):
    rows = [
        f'<tr><th>Mean &mu;</th><td class="num">{_pm(off.get("mean"), off.get("mean_err"))}</td></tr>',
        f'<tr><th>Width &sigma;</th><td class="num">{_pm(off.get("sigma"), off.get("sigma_err"))}</td></tr>',
        f'<tr><th>Off pixels</th><td class="num">{_num(off.get("n_pixels"))}</td></tr>',
    ]
    return (
        f'<div><h3 id="{_e(anchor)}">Off-region significance distribution</h3>\n'
        f'<table class="kv"><tbody>\n{chr(10).join(rows)}\n</tbody></table>\n'
        '<p class="hint">Gaussian fit to the significances of pixels outside the exclusion '
        "regions (51-bin density histogram, as gammapy&rsquo;s <code>plot_distribution</code>). "
        "Without residual sources and with a correct background, expect &mu; &asymp; 0 and "
        "&sigma; &asymp; 1.</p></div>"
    )


def _off_distribution_section(summary):
    return _off_distribution_block(summary.get("off_distribution") or {})


def _results_section(summary):
    """Totals, and the maximum and off distribution unless they come per radius."""
    parts = ['<section id="results"><h2>Results</h2><div class="grid2">',
             _totals_section(summary)]
    if not summary.get("radii"):
        parts += ["<div>", _max_significance_section(summary),
                  _off_distribution_section(summary), "</div>"]
    parts.append("</div></section>")
    return "\n".join(parts)


def _radius_sections(summary, figures):
    """One section per correlation radius of ``summary["radii"]`` (keyed by the radius in
    degrees as text): its maximum, off distribution and figures (``<name>_<r>deg``)."""
    out = []
    for k, (key, entry) in enumerate((summary.get("radii") or {}).items()):
        entry = entry or {}
        rid = _e(key)
        figs = {n: p for n, p in (figures or {}).items() if _radius_suffix(n) == str(key)}
        parts = [f'<section id="radius-{rid}" class="radius">',
                 f"<h2>Correlation radius {rid}&deg;</h2>", '<div class="grid2">',
                 _max_significance_block(entry.get("max_significance") or {},
                                         f"max-significance-{key}"),
                 _off_distribution_block(entry.get("off_distribution") or {},
                                         f"off-distribution-{key}"),
                 "</div>"]
        if figs:
            parts += ['<div class="figures">'] + [_figure_html(n, p) for n, p in figs.items()]
            parts.append("</div>")
        elif k == 0:
            parts.append('<p class="hint">The figures above are for this radius.</p>')
        parts.append("</section>")
        out.append("\n".join(parts))
    return "\n".join(out)


def _sources_section(summary):
    """The catalogue sources excluded from the background (when there are any)."""
    sources = summary.get("excluded_sources") or []
    if not sources:
        return ""
    rows = []
    for src in sources:
        a, b = _lon_lat_names(src.get("frame", "icrs"))
        rows.append(
            f"<tr><td>{_e(src.get('name'))}</td>"
            f'<td class="num">{a} {_num(src.get("lon"), 3)}&deg;</td>'
            f'<td class="num">{b} {_num(src.get("lat"), 3)}&deg;</td>'
            f"<td>{_e(src.get('frame', ''))}</td>"
            f'<td class="num">{_num(src.get("radius_deg"), 2)}&deg;</td></tr>'
        )
    return (
        '<section id="excluded-sources"><h2>Excluded catalogue sources</h2>\n'
        f'<p class="hint" style="margin:0 0 0.6rem">{len(sources)} source'
        f"{'s' if len(sources) != 1 else ''} of the catalogues in the map, each excluded "
        "within the radius given.</p>\n"
        "<table><thead><tr><th>Source</th><th class=\"num\">Longitude</th>"
        "<th class=\"num\">Latitude</th><th>Frame</th><th class=\"num\">Radius</th></tr>"
        "</thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table></section>"
    )


def _run_files(folder):
    """The run's files beside the report: ``[(name, description)]``, in `_FILES` order
    (``summary.json`` always: the run writes it after the report)."""
    folder = Path(folder)
    radii = sorted(folder.glob("maps_*deg.fits"),
                   key=lambda p: float(_RADIUS_NAME.match(p.stem).group(2))
                   if _RADIUS_NAME.match(p.stem) else 0.0)
    out = []
    for name, description in _FILES:
        if name == "summary.json" or (folder / name).exists():
            out.append((name + ("/" if (folder / name).is_dir() else ""), description))
        if name == "maps.fits":
            for path in radii:
                radius = _RADIUS_NAME.match(path.stem)
                text = f"{radius.group(2)}&deg;" if radius else path.stem
                out.append((path.name, f"the same maps for the correlation radius {text}"))
    return out


def _files_section(files, folder):
    items = []
    for name, description in files:
        path = Path(folder) / name
        size = ""
        if path.is_file():
            size = f" ({_size(path.stat().st_size)})"
        items.append(f'<li><a href="{_e(name)}">{_e(name)}</a>{size} &mdash; {description}</li>')
    body = "\n".join(items) or "<li>none</li>"
    return (
        '<section id="files"><h2>Files</h2>\n'
        '<p class="hint" style="margin:0 0 0.6rem">Beside this report (links relative to '
        "its folder).</p>\n"
        f'<ul class="files">\n{body}\n</ul></section>'
    )


def _size(n_bytes):
    for unit in ("bytes", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return ""


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


def _mjd_to_iso(mjd):
    """``"2004-05-12 21:34"`` of an MJD (no time-scale conversion: minutes are shown)."""
    if not _is_number(mjd) or not math.isfinite(mjd):
        return None
    epoch = _dt.datetime(1858, 11, 17)
    try:
        return (epoch + _dt.timedelta(days=float(mjd))).strftime("%Y-%m-%d %H:%M")
    except OverflowError:
        return None


def _date_cell(obs):
    """Date of an observation: ISO text and MJD (``date`` and/or ``tstart_mjd``)."""
    iso = obs.get("date") or _mjd_to_iso(obs.get("tstart_mjd"))
    mjd = obs.get("tstart_mjd")
    if not iso and not _is_number(mjd):
        return "&mdash;"
    parts = [_e(str(iso).replace("T", " ")[:16])] if iso else []
    if _is_number(mjd) and math.isfinite(mjd):
        parts.append(f'<span class="hint">MJD {mjd:.4f}</span>')
    return "<br>".join(parts) or "&mdash;"


def _has(rows, key):
    return any(o.get(key) is not None for o in rows)


def _observations_section(rows, summary=None):
    summary = summary or {}
    n_used = sum(1 for o in rows if str(o.get("status", "used")).lower() == "used")
    n_skipped = len(rows) - n_used
    dated = _has(rows, "date") or _has(rows, "tstart_mjd")
    optional = [c for c in _OBS_OPTIONAL if _has(rows, c[0])]
    head = ["<th>Obs. ID</th>", "<th>Object</th>"]
    if dated:
        head.append("<th>Start</th>")
    head += ['<th class="num">RA [&deg;]</th>', '<th class="num">Dec [&deg;]</th>']
    head += [f'<th class="num">{c[1]}</th>' for c in optional if c[0] == "offset_deg"]
    head += ['<th class="num">Zenith [&deg;]</th>', '<th class="num">Live time [min]</th>']
    head += [f'<th class="num">{c[1]}</th>' for c in optional if c[0] != "offset_deg"]
    head += ["<th>Status</th>", "<th>Reason</th>"]
    body = []
    for obs in rows:
        status = str(obs.get("status") or "used").lower()
        cls = "skipped" if status == "skipped" else "used"
        livetime = obs.get("livetime_s")
        cells = [f'<td class="mono">{_e(obs.get("obs_id"))}</td>',
                 f"<td>{_e(obs.get('object') or '')}</td>"]
        if dated:
            cells.append(f'<td class="num">{_date_cell(obs)}</td>')
        cells += [f'<td class="num">{_num(obs.get("ra_deg"), 3)}</td>',
                  f'<td class="num">{_num(obs.get("dec_deg"), 3)}</td>']
        cells += [f'<td class="num">{_num(obs.get(k), d)}</td>' for k, _, d in optional
                  if k == "offset_deg"]
        cells += [f'<td class="num">{_num(obs.get("zenith_deg"), 1)}</td>',
                  f'<td class="num">{_num(livetime / 60 if _is_number(livetime) else None, 1)}'
                  "</td>"]
        cells += [f'<td class="num">{_num(obs.get(k), d or None)}</td>' for k, _, d in optional
                  if k != "offset_deg"]
        cells += [f'<td><span class="badge {cls}">{_e(status)}</span></td>',
                  f"<td>{_e(obs.get('reason') or '')}</td>"]
        body.append(f'<tr class="{cls}" id="obs-{_e(obs.get("obs_id"))}">' + "".join(cells)
                    + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(head)}">No observations listed.</td></tr>')
    notes = [f"{n_used} used, {n_skipped} skipped."]
    if any(c[0] in ("excess_at_max", "significance_at_max") for c in optional):
        where = _position_text(summary.get("max_significance") or {}) or "see Results"
        notes.append("Excess and significance at max: each observation alone, in the pixel "
                     f"of the map maximum ({where}).")
    if any(c[0] == "offset_deg" for c in optional):
        notes.append("Offset: of the pointing from the map centre.")
    return (
        '<section id="observations"><h2>Observations</h2>\n'
        f'<p class="hint" style="margin:0 0 0.6rem">{" ".join(notes)}</p>\n'
        f'<div style="overflow-x:auto"><table><thead><tr>{"".join(head)}</tr></thead><tbody>\n'
        + "\n".join(body) + "\n</tbody></table></div></section>"
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


def _nav(summary):
    """The page's section links (one per correlation radius, excluded sources when any)."""
    nav = [("figures", "Figures"), ("results", "Results")]
    nav += [(f"radius-{k}", f"r = {k}&deg;") for k in summary.get("radii") or {}]
    if summary.get("excluded_sources"):
        nav.append(("excluded-sources", "Excluded sources"))
    nav += [("observations", "Observations"), ("files", "Files"), ("config", "Configuration"),
            ("provenance", "Provenance")]
    return "<nav>" + "".join(f'<a href="#{_e(a)}">{t}</a>' for a, t in nav) + "</nav>"


def write_report(path, summary, config_text, figures, observations, files=None):
    """Write the run report as one self-contained HTML file.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Output HTML file (its folder is created if needed).
    summary : dict
        The run summary (``summary.json`` content): ``obs_ids``, ``n_obs``, ``totals``,
        ``max_significance``, ``off_distribution``, ``timings``, ``versions`` and
        optionally ``skipped`` (list of ``{"obs_id", "reason"}``), ``inputs`` (list of
        ``{"path", "sha256"}``), ``run_date`` (text), ``radii`` (correlation radius in deg
        as text -> ``{"max_significance", "off_distribution"}``: a section each),
        ``excluded_sources`` (list of ``{"name", "lon", "lat", "frame", "radius_deg"}``)
        and ``flux_note`` (why flux maps are missing). Missing keys are shown as dashes
        rather than raising.
    config_text : str
        The configuration file as given by the user; shown verbatim (escaped).
    figures : dict
        ``{name: path}`` of image files, embedded as base64 data URIs in this order.
        Known names (``significance``, ``excess``, ...) get captions; names ending in
        ``_<r>deg`` go to the section of the correlation radius ``r``.
    observations : list of dict
        One per observation, with keys ``obs_id``, ``object``, ``ra_deg``, ``dec_deg``,
        ``livetime_s``, ``zenith_deg``, ``status`` (``"used"`` or ``"skipped"``) and
        ``reason``; columns are added for ``date`` (ISO text) / ``tstart_mjd``,
        ``offset_deg`` (pointing from the map centre), ``safe_energy_min_tev``,
        ``counts``, ``excess_at_max`` and ``significance_at_max`` (the observation
        alone, at the pixel of the map maximum) when a row has them. Skipped observations
        listed only in ``summary["skipped"]`` are added.
    files : list of (str, str), optional
        Files to link (name relative to the report's folder, description); default: the
        run's files found beside the report, and ``summary.json``.

    Returns
    -------
    path : `~pathlib.Path`
        The written file.
    """
    summary = dict(summary or {})
    path = Path(path)
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
    files = _run_files(path.parent) if files is None else list(files)
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
        _nav(summary),
        _cards(summary, livetime_s),
        "<div style=\"height:1.2rem\"></div>",
        _figures_section(figures, summary),
        _results_section(summary),
        _radius_sections(summary, figures),
        _sources_section(summary),
        _observations_section(rows, summary),
        _files_section(files, path.parent),
        _config_section(config_text),
        _provenance_section(summary),
        "</main>",
        f"<footer>Made by ringbg &middot; {_e(run_date)}</footer>",
        "</body>",
        "</html>",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    return path
