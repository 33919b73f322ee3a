"""The config of ``ringbg demo``: the simulated field, ready to edit and re-run."""

import json

__all__ = ["demo_config"]


def demo_config(datastore, center, outdir):
    """YAML text of the demo run on a simulated store centred on ``center`` (ICRS deg)."""
    lon, lat = center
    # JSON strings are YAML strings: any folder name (with '#', ': ', quotes) stays whole
    datastore, outdir = json.dumps(str(datastore)), json.dumps(str(outdir))
    return f"""\
# ringbg demo: simulated observations of a field with a bright point source at the centre
# and a fainter extended source. Edit and re-run: ringbg run demo.yaml --overwrite
datastore: {datastore}
observations:
  cone: {{frame: icrs, lon: {lon} deg, lat: {lat} deg, radius: 3 deg}}
geom:
  skydir: {{frame: icrs, lon: {lon} deg, lat: {lat} deg}}
  width: 5 deg
  binsize: 0.02 deg
  projection: CAR
  energy: {{min: 0.5 TeV, max: 50 TeV, nbins: 8}}
  offset_max: 2.5 deg
safe_mask:
  methods: [aeff-default]
exclusion:
  regions:
    - {{frame: icrs, lon: {lon} deg, lat: {lat} deg, radius: 0.3 deg}}
  auto: {{threshold: 5, iterations: 3, dilate: 0.1 deg}}
ring:
  r_in: 0.6 deg
  width: 0.3 deg
excess:
  correlation_radius: 0.1 deg
  correlate_off: false
  n_sigma_ul: 2
  spectral_index: 2.3
output:
  dir: {outdir}
  figures: true
  overwrite: true
"""
