"""Tests of ringbg.report: a self-contained, escaped HTML page that a browser renders."""

import base64
import contextlib
import os
import re
import shutil
import struct
import time
from html.parser import HTMLParser

import numpy as np
import pytest

from ringbg.report import write_report

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]

CONFIG_TEXT = """\
datastore: $GAMMAPY_DATA/hess-dl3-dr1
observations:
  obs_ids: [20136, 20137]
geom:
  skydir: {frame: icrs, lon: 228.32 deg, lat: -59.08 deg}
  width: 3 deg
# a comment with markup: <script>alert("x")</script> & "quotes"
"""


def write_png(path, seed=0):
    """A small but real PNG figure."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3), dpi=80)
    ax = fig.add_subplot()
    ax.imshow(np.random.default_rng(seed).normal(size=(30, 40)), cmap="RdBu_r")
    ax.set_title(f"figure {seed}")
    fig.savefig(path)
    return path


@pytest.fixture
def figures(tmp_path):
    names = ["significance", "excess", "significance_distribution", "exclusion", "flux"]
    return {name: write_png(tmp_path / f"{name}.png", i) for i, name in enumerate(names)}


@pytest.fixture
def summary():
    return {
        "obs_ids": [20136, 20137],
        "n_obs": 2,
        "totals": {
            "counts": 41803,
            "counts_off": 87621192,
            "acceptance": 44754.8,
            "acceptance_off": 96374320.0,
            "background": 40671.9,
            "excess": 1131.1,
        },
        "max_significance": {"value": 10.049, "lon": 228.53, "lat": -59.16, "frame": "icrs"},
        "off_distribution": {
            "mean": -0.0107, "sigma": 1.0112, "mean_err": 0.003, "sigma_err": 0.002,
            "n_pixels": 20493,
        },
        "timings": {"total": 12.5, "write": 0.7},
        "versions": {"ringbg": "0.1.0", "numpy": "2.4", "astropy": "8.0"},
        "skipped": [{"obs_id": 20999, "reason": "no bkg IRF <BKG> & no aeff"}],
        "inputs": [{"path": "/data/obs-index.fits.gz", "sha256": "0123abcd" * 8}],
    }


@pytest.fixture
def observations():
    return [
        {"obs_id": 20136, "object": "MSH 15-52", "ra_deg": 228.61, "dec_deg": -58.77,
         "livetime_s": 1682.0, "zenith_deg": 36.2, "status": "used", "reason": ""},
        {"obs_id": 20137, "object": "MSH 15-52", "ra_deg": 228.03, "dec_deg": -59.48,
         "livetime_s": 1683.0, "zenith_deg": 37.0, "status": "used", "reason": None},
        {"obs_id": 20998, "object": "Cen <A> & B", "ra_deg": 201.3, "dec_deg": -43.0,
         "livetime_s": 1500.0, "zenith_deg": 55.0, "status": "skipped",
         "reason": "pointing outside cone > 2.5 deg"},
    ]


@pytest.fixture
def report(tmp_path, summary, figures, observations):
    return write_report(
        tmp_path / "out" / "report.html", summary, CONFIG_TEXT, figures, observations
    )


class _Collector(HTMLParser):
    """Collect tags with their attributes, and the text of <pre>."""

    def __init__(self):
        super().__init__()
        self.tags = []
        self.pre = []
        self._in_pre = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_pre = self._in_pre or tag == "pre"

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        if self._in_pre:
            self.pre.append(data)


def parse(path):
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector


def test_report_is_self_contained(report, figures):
    html = report.read_text(encoding="utf-8")
    page = parse(report)
    # Nothing is loaded from anywhere: every src is a data URI; a href is an in-page anchor
    # or a link to a file beside the report (a plain relative name, never loaded).
    for tag, attrs in page.tags:
        if "src" in attrs:
            assert attrs["src"].startswith("data:"), f"<{tag} src={attrs['src'][:60]!r}>"
        if "href" in attrs:
            value = attrs["href"]
            assert tag == "a", tag
            assert value.startswith("#") or _is_sibling_link(value), value
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html, re.IGNORECASE)
    assert "<script" not in html.lower().replace("&lt;script", "")
    assert "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html

    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == len(figures)
    for attrs, path in zip(images, figures.values()):
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix)
        assert base64.b64decode(attrs["src"][len(prefix):]) == path.read_bytes()
        assert attrs.get("alt")


def _is_sibling_link(href):
    """A relative link to a file (or folder) in the report's own folder."""
    return ("://" not in href and ":" not in href and not href.startswith(("/", "."))
            and "/" not in href.rstrip("/") and "\\" not in href)


def test_report_lists_used_and_skipped_observations(report):
    html = report.read_text(encoding="utf-8")
    rows = re.findall(r'<tr class="(used|skipped)" id="obs-(\d+)"', html)
    assert rows == [("used", "20136"), ("used", "20137"), ("skipped", "20998"),
                    ("skipped", "20999")]
    # Reasons and names are shown, escaped.
    assert "pointing outside cone &gt; 2.5 deg" in html
    assert "no bkg IRF &lt;BKG&gt; &amp; no aeff" in html
    assert "Cen &lt;A&gt; &amp; B" in html
    assert "Cen <A>" not in html
    assert "2 used, 2 skipped" in html


def test_report_shows_config_escaped_and_verbatim(report):
    html = report.read_text(encoding="utf-8")
    assert '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;' in html
    assert '<script>alert("x")</script>' not in html
    # The parser unescapes the <pre> text back to exactly what the user wrote.
    assert "".join(parse(report).pre) == CONFIG_TEXT.rstrip()


def test_report_shows_results_and_provenance(report):
    html = report.read_text(encoding="utf-8")
    for text in ["41,803", "87,621,192", "40,671.9", "10.049", "228.5300", "-59.1600",
                 "-0.0107 &plusmn; 0.0030", "1.0112 &plusmn; 0.0020", "20,493",
                 "0123abcd" * 8, "/data/obs-index.fits.gz", "0.1.0", "12.50 s"]:
        assert text in html, text


def test_report_tolerates_missing_keys_and_figures(tmp_path):
    path = write_report(
        tmp_path / "r.html", {"n_obs": 0}, "", {"significance": tmp_path / "nope.png"}, []
    )
    html = path.read_text(encoding="utf-8")
    assert "Figure file not found: nope.png" in html
    assert "No observations listed." in html
    assert "&mdash;" in html


# --------------------------------------------------------------------------- browser


def _chromium_or_skip():
    """Selenium's Chrome driver on Debian's chromium; fail in CI when it is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium Python package")
    if missing:
        message = f"headless browser test needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: it must be installed)")
        pytest.skip(message)


def png_pixels(data):
    """Decode a PNG (bytes) to an array with matplotlib, checking the signature."""
    import io

    from matplotlib.image import imread

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(data), format="png")


@contextlib.contextmanager
def _chromium_page(path, profile, log_prefs):
    """Open ``path`` in headless Chromium (fresh profile folder ``profile``, the given
    ``goog:loggingPrefs``), wait until it has loaded and yield the driver."""
    _chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile.mkdir()
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", log_prefs)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(path.resolve().as_uri())
        deadline = time.monotonic() + 30
        while driver.execute_script("return document.readyState") != "complete":
            assert time.monotonic() < deadline, "page did not finish loading"
            time.sleep(0.1)
        yield driver
    finally:
        driver.quit()


def test_report_renders_in_headless_chromium(report, tmp_path, figures):
    """A real browser opens the page offline: all images decode, no console errors."""
    with _chromium_page(report, tmp_path / "chromium-profile",
                        {"browser": "ALL", "performance": "ALL"}) as driver:
        images = driver.execute_script(
            "return Array.from(document.images).map("
            "i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(images) == len(figures)
        for alt, complete, width, height in images:
            assert complete and width > 0 and height > 0, f"image {alt!r} did not load"

        title = driver.execute_script("return document.title")
        assert title.startswith("ringbg report")
        headings = driver.execute_script(
            "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"
        )
        assert headings == ["Figures", "Results", "Observations", "Files", "Configuration",
                            "Provenance"]
        # Layout sanity: the figures are shown at a readable size, not collapsed.
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.getBoundingClientRect().width)"
        )
        assert min(widths) > 300

        height = driver.execute_script("return document.documentElement.scrollHeight")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1},
        })
        screenshot = tmp_path / "report.png"
        screenshot.write_bytes(base64.b64decode(shot["data"]))

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        # The page asked for nothing over the network.
        import json

        urls = [
            json.loads(e["message"])["message"].get("params", {}).get("request", {}).get("url", "")
            for e in driver.get_log("performance")
        ]
        assert not [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))]

    data = screenshot.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1280 and height > 1500
    pixels = png_pixels(data)
    assert pixels.std() > 0.05, "screenshot is blank"
    # Not a single-colour page: many distinct colours (figures, header, tables).
    rgb = (pixels[..., :3] * 255).astype(np.uint32)
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert len(colours) > 500


# --------------------------------------------------------------------------- survey products


@pytest.fixture
def rich(tmp_path, summary, observations):
    """A run with two correlation radii, catalogue exclusion, no flux maps, dated
    observations with per-observation numbers, and the run's files beside the report."""
    out = tmp_path / "rich"
    out.mkdir()
    for name in ("maps.fits", "maps_0.2deg.fits", "maps_0.1deg.fits", "stacked_onoff.fits",
                 "exclusion_mask.fits"):
        (out / name).write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    figs = {name: write_png(out / f"{name}.png", i) for i, name in enumerate(
        ["significance", "excess", "significance_distribution", "significance_0.2deg",
         "significance_distribution_0.2deg"])}
    summary = dict(summary)
    summary["radii"] = {
        "0.1": {"max_significance": summary["max_significance"],
                "off_distribution": summary["off_distribution"]},
        "0.2": {"max_significance": {"value": 12.5, "lon": 228.4, "lat": -59.1,
                                     "frame": "icrs"},
                "off_distribution": {"mean": 0.02, "sigma": 1.05, "mean_err": 0.01,
                                     "sigma_err": 0.01, "n_pixels": 19000}},
    }
    summary["excluded_sources"] = [
        {"name": "HESS J1514-591 <msh>", "lon": 320.33, "lat": -1.19, "frame": "galactic",
         "radius_deg": 0.4},
        {"name": "HESS J1507-622", "lon": 317.95, "lat": -3.49, "frame": "galactic",
         "radius_deg": 0.3},
    ]
    summary["flux_note"] = "point-like IRFs: no flux maps (the <RAD_MAX> cut)"
    rows = [dict(o) for o in observations]
    rows[0].update(tstart_mjd=53090.8924, offset_deg=0.52, safe_energy_min_tev=0.87,
                   counts=2104, excess_at_max=7.4, significance_at_max=2.31)
    rows[1].update(date="2004-03-27T21:05:11", offset_deg=0.61, counts=1987)
    path = write_report(out / "report.html", summary, CONFIG_TEXT, figs, rows)
    return path, figs


def _section(html, section_id):
    start = html.index(f'<section id="{section_id}"')
    return html[start:html.index("</section>", start)]


def test_observation_table_adds_date_offset_counts_and_numbers_at_max(rich):
    from astropy.time import Time

    html = rich[0].read_text(encoding="utf-8")
    table = _section(html, "observations")
    for header in ("Start", "Offset [&deg;]", "Zenith [&deg;]", "Live time [min]",
                   "E<sub>safe</sub> [TeV]", "Counts", "Excess at max",
                   "Sig. at max [&sigma;]"):
        assert f">{header}</th>" in table, header
    row = table[table.index('id="obs-20136"'):table.index('id="obs-20137"')]
    iso = Time(53090.8924, format="mjd").iso[:16]
    assert iso in row and "MJD 53090.8924" in row
    for text in ("0.52", "0.870", "2,104", "7.4", "2.31"):
        assert f">{text}</td>" in row, text
    row = table[table.index('id="obs-20137"'):table.index('id="obs-20998"')]
    assert "2004-03-27 21:05" in row and "MJD" not in row
    assert row.count("&mdash;") == 3  # no safe energy, excess or significance at max
    assert "of the map maximum" in table and "RA 228.530&deg;" in table


def test_observation_table_without_the_new_keys_keeps_its_columns(report):
    table = _section(report.read_text(encoding="utf-8"), "observations")
    assert "<th>Start</th>" not in table and "Offset" not in table and "Counts" not in table
    assert len(re.findall(r"<th[ >]", table)) == 8


def test_report_links_the_run_files_relatively(rich):
    html = rich[0].read_text(encoding="utf-8")
    files = _section(html, "files")
    links = re.findall(r'<a href="([^"]+)"', files)
    assert links == ["maps.fits", "maps_0.1deg.fits", "maps_0.2deg.fits",
                     "stacked_onoff.fits", "exclusion_mask.fits", "summary.json"]
    assert "correlation radius 0.2&deg;" in files
    assert "2.9 kB" in files  # sizes of the files present


def test_report_has_a_section_per_correlation_radius(rich):
    html = rich[0].read_text(encoding="utf-8")
    first, second = _section(html, "radius-0.1"), _section(html, "radius-0.2")
    assert "Correlation radius 0.1&deg;" in first and "The figures above" in first
    assert "12.500" in second and "1.0500 &plusmn; 0.0100" in second and "19,000" in second
    assert 'id="fig-significance_0.2deg"' in second
    assert 'id="fig-significance_distribution_0.2deg"' in second
    figures = _section(html, "figures")
    assert 'id="fig-significance"' in figures and "0.2deg" not in figures
    # the per-radius tables are in the radius sections, not repeated under Results
    assert "Maximum significance" not in _section(html, "results")
    assert len(re.findall(r'id="max-significance[-"]', html)) == 2


def test_report_lists_excluded_sources_and_the_flux_note(rich):
    html = rich[0].read_text(encoding="utf-8")
    sources = _section(html, "excluded-sources")
    assert "HESS J1514-591 &lt;msh&gt;" in sources and "HESS J1507-622" in sources
    assert "l 320.330&deg;" in sources and "0.40&deg;" in sources
    assert "2 sources" in sources
    note = _section(html, "figures")
    assert "the &lt;RAD_MAX&gt; cut" in note and 'id="flux-note"' in note


def test_report_without_catalogues_has_no_sources_section(report):
    assert 'id="excluded-sources"' not in report.read_text(encoding="utf-8")


def test_rich_report_renders_in_headless_chromium(rich, tmp_path):
    """The new sections are shown; every file link resolves to a file beside the report."""
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    path, figs = rich
    (path.parent / "summary.json").write_text("{}")  # the run writes it after the report
    with _chromium_page(path, tmp_path / "chromium-profile-rich", {"browser": "ALL"}) as driver:
        headings = driver.execute_script(
            "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        assert headings == ["Figures", "Results", "Correlation radius 0.1\u00b0",
                            "Correlation radius 0.2\u00b0", "Excluded catalogue sources",
                            "Observations", "Files", "Configuration", "Provenance"]
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth,"
            " i.closest('section').id])")
        assert len(images) == len(figs)
        assert all(ok and width > 0 for ok, width, _ in images)
        assert [s for _, _, s in images].count("radius-0.2") == 2
        hrefs = driver.execute_script(
            "return Array.from(document.querySelectorAll('#files a')).map(a => a.href)")
        assert len(hrefs) == 6
        for href in hrefs:
            url = urlparse(href)
            assert url.scheme == "file", href
            target = Path(unquote(url.path))
            assert target.parent == path.parent.resolve() and target.is_file(), href
        shown = driver.execute_script(
            "return ['flux-note', 'excluded-sources', 'radius-0.2', 'files'].map("
            "id => document.getElementById(id).getBoundingClientRect().height)")
        assert min(shown) > 20
        columns = driver.execute_script(
            "return Array.from(document.querySelectorAll('#observations th'))"
            ".map(th => th.textContent)")
        assert "Start" in columns and "Sig. at max [\u03c3]" in columns
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_run_writes_every_figure_and_embeds_it(msh_result, tmp_path):
    """The run's figures and report (outputs.start_figures, _write_report): a figure per
    product present, each embedded once in the report, the titles' radius from the config."""
    from ringbg.figures import FIGURES
    from ringbg.outputs import _write_report, start_figures

    pending = start_figures(msh_result)
    _write_report(msh_result, tmp_path, msh_result.summary, pending.result(tmp_path))
    expected = [n for n, spec in FIGURES.items() if spec.product in msh_result.maps]
    assert [p.stem for p in sorted(tmp_path.glob("*.png"))] == sorted(expected)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == len(expected)
    payloads = {base64.b64decode(data) for data in embedded}
    assert payloads == {(tmp_path / f"{n}.png").read_bytes() for n in expected}
