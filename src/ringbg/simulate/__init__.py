"""Synthetic IACT observations written as a GADF DL3 data store.

The simulated instrument is a fixed, H.E.S.S.-like model (a 4-telescope array at the H.E.S.S. site
with a 3 deg half-width field of view). For every observation the module writes the IRFs as GADF
tables and then draws the events *from those tables*, interpolated the way gammapy 2.1 interpolates
them, so that the counts expected from the files (exposure x flux, background IRF x observation
time) are the true expectation of the simulated event lists:

* **Background** -- ``BKG_3D`` (``FOVALIGN = RADEC``, ``DETX``/``DETY`` in [-3, 3] deg) or
  ``BKG_2D`` (offset in [0, 3] deg). The rate is separable: a power law of index 2.7 in
  reconstructed energy with a zenith-dependent low-energy roll-off, times a Gaussian fall-off
  with field-of-view position (sigma 1.4 deg), optionally times ``exp(g * DETX)``. Events:
  ``N ~ Poisson(ONTIME * integral of rate over energy and solid angle)`` out to the IRF edges;
  energies from the log-log interpolation of the table (piecewise power law, sampled exactly),
  positions from the log-linear interpolation of the table on a 0.01 deg grid in field-of-view
  coordinates. As in gammapy, the background IRF is multiplied by the observation time
  (``ONTIME``, sum of the GTIs), not by the live time; ``DETX`` points to decreasing RA
  (gammapy's ``FoVICRSFrame``); and a ``BKG_2D`` is extended by one offset bin at its edge
  rate (to 3.1 deg) because gammapy's ``MapDatasetMaker`` pads it so
  (``background_pad_offset=True``).
* **Sources** -- power laws ``dN/dE = amplitude * (E / 1 TeV)^-index`` in true energy
  [0.1, 100] TeV, point-like or Gaussian. Events are a thinned Poisson process:
  ``N ~ Poisson(LIVETIME * max(Aeff) * integral of the flux)`` proposals, each kept with
  probability ``Aeff(E_true, offset_true) / max(Aeff)`` (``AEFF_2D`` interpolated like gammapy),
  so the kept number is Poisson with mean ``LIVETIME * integral of flux x Aeff``. Positions are
  smeared by the Gaussian PSF (the ``PSF_TABLE``), energies by the Gaussian energy dispersion
  (the ``EDISP_2D``); reconstructed energies may fall slightly outside [0.1, 100] TeV.

The event lists carry an extra ``MC_ID`` column (0 = background, k = k-th source, 1-based) as
in CTA's simulated data challenges; readers that only know the GADF columns ignore it.

All randomness comes from ``numpy.random.default_rng([seed, obs_id])``: an observation's events
depend only on the seed, its id and its own settings, and two runs with the same arguments write
byte-identical files.

The package is split by concept: `instrument` (the response model and its IRF tables), `sky`
(pointings, schedule, sources), `events` (sampling), `store` (writing). It deliberately does
not import ringbg's readers or IRF evaluation: it is an independent oracle, so that the tests
that compare ringbg's numbers with the truth it simulated are not ringbg checking itself.
"""

from .sky import DEFAULT_CENTER, demo_sources, survey_pointings, wobble_pointings
from .store import simulate_datastore

__all__ = [
    "simulate_datastore",
    "wobble_pointings",
    "survey_pointings",
    "demo_sources",
    "DEFAULT_CENTER",
]
