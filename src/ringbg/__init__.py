"""ringbg: ring-background excess and significance sky maps from IACT DL3 data."""

__version__ = "0.1.0"
