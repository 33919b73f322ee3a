"""ringbg: ring-background excess and significance sky maps from IACT DL3 data."""

__version__ = "0.1.0"


def run(config, jobs=None, progress=False, cache_dir=None):
    """Run the workflow of a config (path, YAML text, dict or Config); see `ringbg.pipeline.run`."""
    from .pipeline import run as _run

    return _run(config, jobs=jobs, progress=progress, cache_dir=cache_dir)


__all__ = ["run", "__version__"]
