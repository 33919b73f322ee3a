"""The documentation's generators (docs/_ext/configref.py) and the configs shown in docs/.

The docs themselves are built in CI (``sphinx-build -W``); these tests need no Sphinx.
"""

import importlib.util
import re
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from ringbg.config import TEMPLATE, Config, PositiveAngle, load_config
from ringbg.products import PRODUCTS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _configref():
    spec = importlib.util.spec_from_file_location("configref", DOCS / "_ext" / "configref.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


configref = _configref()


def _all_keys(model, prefix=""):
    """Every dotted key of a model, walked here independently of the generator."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        for sub in _nested(field.annotation):
            suffix = "[]." if "list[" in str(field.annotation) else "."
            keys.extend(_all_keys(sub, prefix + name + suffix))
    return keys


def _nested(annotation):
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested(arg)]


def test_every_config_key_is_in_the_reference():
    text = configref.config_reference()
    keys = _all_keys(Config)
    assert len(keys) > 50  # the walk went into the nested sections
    missing = [key for key in keys if f"``{key}``" not in text]
    assert not missing, f"keys missing from the config reference: {missing}"


def test_every_section_has_a_table_and_a_label():
    text = configref.config_reference()
    sections = {key.rsplit(".", 1)[0] for key in _all_keys(Config) if "." in key}
    for section in sections:
        assert f"\n``{section}``\n" in text, section
    labels = re.findall(r"^\.\. _(config-[\w-]+):$", text, re.M)
    assert len(labels) == len(set(labels)) == len(sections) + 1  # + the top level
    for ref in re.findall(r":ref:`([^`]+)`", text):
        assert ref in labels, ref


class _Item(BaseModel):
    size: PositiveAngle = 0.1


class _Section(BaseModel):
    """A section added to the model.

    More text that is not the intro.
    """

    #: a key documented by a comment
    new_key: Annotated[int, Field(ge=2, le=7)] = 3
    described: str = Field("x", description="a key with a description")
    mode: Literal["a", "b"] = "a"
    items: list[_Item] = []


class _Model(BaseModel):
    needed: str
    section: _Section = _Section()
    maybe: _Item | None = None


def test_a_new_key_appears_with_its_type_default_and_doc():
    text = configref.config_reference(_Model, template="needed: x   # the note of the template\n")
    for key in ("needed", "section", "section.new_key", "section.described", "section.mode",
                "section.items", "section.items[].size", "maybe", "maybe.size"):
        assert f"``{key}``" in text, key
    assert "a key documented by a comment" in text
    assert "a key with a description" in text
    assert "the note of the template" in text
    assert "A section added to the model." in text and "More text" not in text
    assert "int (>= 2, <= 7)" in text and "``3``" in text
    assert "one of ``a``, ``b``" in text
    assert "angle (deg; > 0, <= 360)" in text
    row = text.split("``needed``", 1)[1].split("* -", 1)[0]
    assert "required" in row
    assert ":ref:`config-section-items`" in text and ".. _config-section-items:" in text


def test_template_comments():
    template = (
        "# header, not a key's\n"
        "top: 1        # the top key\n"
        "group:\n"
        "  inner: 2    # first line\n"
        "              # second line\n"
        "  other: []\n"
        "              # not other's: it has no comment of its own\n"
        "  more: 3     # tutorial (default: 4); what more does\n"
        "  areas: []   # tutorial: the areas\n"
        "  level: 2    # default: 2; the level\n"
        "  plain: 1    # tutorial\n"
        "  kept: 1     # defaults of gammapy; kept as it is\n")
    notes = configref.template_comments(template)
    assert notes["top"] == "the top key"
    assert notes["group.inner"] == "first line second line"
    assert "group.other" not in notes and "group" not in notes
    assert notes["group.more"] == "what more does"
    assert notes["group.areas"] == "the areas"
    assert notes["group.level"] == "the level"
    assert notes["group.plain"] == ""
    assert notes["group.kept"] == "defaults of gammapy; kept as it is"


def test_template_keys_are_config_keys():
    """Every key the template comments on is a config key (the template's notes land)."""
    keys = {key.replace("[]", "") for key in _all_keys(Config)}
    notes = configref.template_comments(TEMPLATE)
    assert notes and set(notes) <= keys, set(notes) - keys


def test_rst_escape_keeps_literals():
    assert configref.rst_escape("maps_<r>deg.fits *x* ``a_b`` `ringbg.run`") == (
        r"maps\_<r>deg.fits \*x\* ``a_b`` `ringbg.run`")


def test_every_product_is_in_the_products_table():
    text = configref.products_reference()
    for name, product in PRODUCTS.items():
        assert f"``{name}``" in text
        if product.unit:
            assert f"``{product.unit}``" in text


def _yaml_configs():
    for page in sorted(DOCS.glob("*.rst")):
        for block in re.findall(r"\.\. code-block:: yaml\n\n((?:   .*\n|\n)+)", page.read_text()):
            if "datastore:" in block:
                yield page.name, "\n".join(line[3:] for line in block.splitlines())


def test_the_docs_configs_are_valid(data_dir, monkeypatch):
    configs = list(_yaml_configs())
    assert configs, "no config found in docs/*.rst"
    monkeypatch.setenv("GAMMAPY_DATA", str(data_dir))
    for page, text in configs:
        try:
            load_config(text)
        except Exception as exc:  # the page's name in the failure
            pytest.fail(f"docs/{page}: {exc}")
