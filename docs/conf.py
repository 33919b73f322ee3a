"""Sphinx configuration of ringbg's documentation.

Build: ``pip install -e ".[docs]"`` then ``sphinx-build -W --keep-going -b html docs
docs/_build/html``. No network at build time (no intersphinx) and no data needed.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))  # the source tree, also without an install

import ringbg  # noqa: E402

project = "ringbg"
author = "the ringbg developers"
copyright = "the ringbg developers, BSD-3-Clause"
release = ringbg.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "configref",
]

templates_path = ["_templates"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
html_theme_options = {"description": "Ring-background sky maps from IACT DL3 data",
                      "fixed_sidebar": True, "page_width": "1240px",
                      "sidebar_width": "240px"}

# `name` in docstrings links to the Python object when there is one (plain text otherwise)
default_role = "py:obj"

autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc docstrings give the types
# the pydantic models' inherited machinery (model_dump, ...) is pydantic's, not ringbg's
autodoc_inherit_docstrings = False

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False


def _public_objects():
    return {id(getattr(ringbg, name)) for name in ringbg.__all__ if name != "__version__"}


def _skip_public(app, what, name, obj, skip, options):
    """The public API is documented once, in api.rst: the module pages leave it out."""
    if what == "module" and id(obj) in _PUBLIC:
        return True
    return None


_PUBLIC = _public_objects()


def setup(app):
    app.connect("autodoc-skip-member", _skip_public)
