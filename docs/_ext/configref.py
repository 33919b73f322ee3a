"""The config reference, generated from ringbg's pydantic config model.

`config_reference` walks `ringbg.config.Config` (nested models, lists of models, optional
models) and returns reStructuredText: one section per config section, with a table of its
keys (full dotted name, type with units and bounds, default, description). The description
of a key is its ``Field(description=...)``, else its ``#:`` comment in the model's source,
else its comment in the annotated template (``ringbg config``). A key added to the model
appears without any change here.

`products_reference` does the same for the map products (`ringbg.products.PRODUCTS`).

The Sphinx directives ``.. ringbg-config-reference::`` and ``.. ringbg-products::`` insert
these texts; the module imports Sphinx only in `setup`, so that the generators can be tested
without Sphinx.
"""

import ast
import inspect
import re
import textwrap
import typing
from types import NoneType, UnionType

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = ["config_reference", "products_reference", "iter_fields", "template_comments",
           "setup"]

#: the names of ringbg's validator functions -> the type a user writes
_VALIDATOR_TYPES = {"_angle": "angle", "_energy": "energy", "_path": "path",
                    "_width": "angle or [width, height]", "_projection": "WCS projection code"}
#: the unit a bare number is taken in
_VALIDATOR_UNITS = {"_angle": "deg", "_energy": "TeV", "_width": "deg"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _is_model(tp):
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _strip_annotated(tp):
    """(base type, metadata list) of an ``Annotated`` type, flattening ``FieldInfo``s."""
    metadata = []
    while typing.get_origin(tp) is typing.Annotated:
        tp, *extra = typing.get_args(tp)
        metadata.extend(extra)
    return tp, _flat_metadata(metadata)


def _flat_metadata(items):
    out = []
    for item in items:
        nested = getattr(item, "metadata", None)
        if isinstance(nested, list) and not hasattr(item, "func"):  # a FieldInfo
            out.extend(_flat_metadata(nested))
        else:
            out.append(item)
    return out


def _validator_name(metadata):
    for item in metadata:
        func = getattr(item, "func", None)
        if func is not None and getattr(func, "__name__", "") in _VALIDATOR_TYPES:
            return func.__name__
    return None


def _bounds(metadata):
    parts = []
    for item in metadata:
        for attr, sign in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None and not callable(value):
                parts.append(f"{sign} {_number(value)}")
    return ", ".join(parts)


def _number(value):
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and abs(value) >= 2**31:  # 64-bit limits: 2^63 - 1, -2^63
        for exp in (31, 32, 63, 64):
            if value in (2**exp - 1, -(2**exp)):
                return f"2^{exp} - 1" if value > 0 else f"-2^{exp}"
    return str(value)


def _union_members(tp):
    if typing.get_origin(tp) in (typing.Union, UnionType):
        return list(typing.get_args(tp))
    return None


def format_type(tp, metadata=(), labels=None):
    """A type annotation as the text a user needs (``angle (deg), > 0``, ``list of int``).

    ``labels`` maps a model class to the label of its section (a link to it).
    """
    tp, inner = _strip_annotated(tp)
    metadata = list(metadata) + inner
    validator = _validator_name(metadata)
    if validator is not None:
        details = [d for d in (_VALIDATOR_UNITS.get(validator), _bounds(metadata)) if d]
        text = _VALIDATOR_TYPES[validator]
        return f"{text} ({'; '.join(details)})" if details else text
    members = _union_members(tp)
    if members is not None:
        texts = [format_type(m, (), labels) for m in members if m is not NoneType]
        if NoneType in members:
            texts.append("null")
        return " or ".join(texts)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"``{a}``" for a in args)
    if origin in (list, tuple, set):
        return "list of " + (format_type(args[0], (), labels) if args else "values")
    if origin is dict:
        key, value = (format_type(a, (), labels) for a in args) if args else ("str", "value")
        return f"mapping of {key} to {value}"
    if _is_model(tp):
        label = (labels or {}).get(tp)
        return f"section :ref:`{label}`" if label else "section"
    name = {bool: "bool", int: "int", float: "float", str: "str", object: "value"}.get(
        tp, getattr(tp, "__name__", str(tp)))
    bounds = _bounds(metadata)
    return f"{name} ({bounds})" if bounds else name


def _models_in(tp):
    """The model classes a field's annotation holds (``Model``, ``Model | None``, lists)."""
    tp, _ = _strip_annotated(tp)
    if _is_model(tp):
        return [tp]
    found = []
    for arg in typing.get_args(tp):
        if arg is not NoneType and not isinstance(arg, (str, int, float, bool)):
            found.extend(_models_in(arg))
    return found


def _is_list_of_models(tp):
    tp, _ = _strip_annotated(tp)
    members = _union_members(tp) or [tp]
    return any(typing.get_origin(m) in (list, tuple) and _models_in(m) for m in members)


def iter_fields(model, prefix=""):
    """Every key of ``model`` and of its nested models, depth first.

    Yields
    ------
    path : str
        The dotted key (``geom.energy.min``); items of a list of sections get ``[]``
        (``exclusion.regions[].radius``).
    model : type
        The model class the key belongs to.
    name : str
        The key's name in that model.
    field : `pydantic.fields.FieldInfo`
        The field.
    """
    for name, field in model.model_fields.items():
        path = prefix + name
        yield path, model, name, field
        for sub in _models_in(field.annotation):
            yield from iter_fields(sub, path + ("[]." if _is_list_of_models(field.annotation)
                                                else "."))


def _class_defaults(model):
    try:
        return model().model_dump()
    except Exception:  # required keys: no defaults as a whole
        return None


def _yaml_value(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def format_default(field):
    """The default of a field as YAML, ``required``, or a link to its section's defaults."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        if value.model_dump() == _class_defaults(type(value)):
            return "its keys' defaults"
        value = value.model_dump()
    return f"``{_yaml_value(value)}``"


def attribute_comments(model):
    """The ``#:`` comments above the fields of ``model`` and its bases (name -> text)."""
    comments = {}
    for cls in reversed(model.__mro__):
        if not _is_model(cls) or cls is BaseModel:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        for node in ast.parse(source).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                text = _comment_above(lines, node.lineno - 1)
                if text:
                    comments[node.target.id] = text
    return comments


def _comment_above(lines, index):
    found = []
    for line in reversed(lines[:index]):
        stripped = line.strip()
        if not stripped.startswith("#:"):
            break
        found.append(stripped[2:].strip())
    return " ".join(reversed(found))


_KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w-]*):(.*)$")
#: the template's notes on its own settings ("tutorial (default: 5 deg); ...", "default: 2;
#: ..."), redundant with the Default column
_TEMPLATE_PREFIX = re.compile(r"^(tutorial\s*(\(default:[^)]*\))?\s*([;,:]\s*|$)"
                              r"|default(:[^;]*)?(;\s*|$))")


def template_comments(text):
    """The comments of an annotated YAML template, by dotted key (``geom.width`` -> text).

    A comment on a key's line, and the comment-only lines right below it, describe that key.
    """
    comments, stack, last = {}, [], None
    for line in text.splitlines():
        body, _, comment = line.partition("#")
        match = _KEY_LINE.match(body)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            last = ".".join(name for _, name in stack)
            if comment.strip():
                comments[last] = comment.strip()
            else:
                last = None
        elif not body.strip() and comment.strip() and last is not None and line[0].isspace():
            comments[last] += " " + comment.strip()
        else:
            last = None
    return {key: _TEMPLATE_PREFIX.sub("", value, count=1) for key, value in comments.items()}


def rst_escape(text):
    """Plain text for reStructuredText, keeping its double-backtick literals and
    single-backtick references as they are."""
    parts = re.split(r"(``[^`]+``|`[^`]+`)", text)
    return "".join(p if p.startswith("`") else re.sub(r"([\\*_`|])", r"\\\1", p)
                   for p in parts)


def _label(path):
    return "config-" + (re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "top-level")


def _sections(model):
    """(path, model) of the top level and of each nested section, in walk order."""
    sections = [("", model)]
    for path, _, _, field in iter_fields(model):
        for sub in _models_in(field.annotation):
            sections.append((path + ("[]" if _is_list_of_models(field.annotation) else ""), sub))
    return sections


def _template_key(path):
    return path.replace("[]", "")


def _description(field, comment, template_note):
    for text in (field.description, comment, template_note):
        if text and text.strip():
            return " ".join(text.split())
    return ""


def _field_labels(key, field):
    """The label of the section of each model a field holds."""
    suffix = "[]" if _is_list_of_models(field.annotation) else ""
    return {sub: _label(key + suffix) for sub in _models_in(field.annotation)}


def _table(path, model, template):
    comments = attribute_comments(model)
    rows = []
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        labels = _field_labels(key, field)
        rows.append([
            f"``{key}``",
            format_type(field.annotation, field.metadata, labels),
            format_default(field),
            rst_escape(_description(field, comments.get(name),
                                    template.get(_template_key(key)))),
        ])
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 22 26 16 36", "",
             "   * - Key", "     - Type", "     - Default", "     - Description"]
    for row in rows:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" if cell else "     -" for cell in row[1:])
    return lines


def _own_doc(model):
    """The docstring of the model class itself (not pydantic's, which it may inherit)."""
    doc = model.__dict__.get("__doc__")
    if not doc or doc == BaseModel.__doc__:
        return ""
    return inspect.cleandoc(doc)


def _section_intro(path, model):
    doc = _own_doc(model)
    text = doc.split("\n\n")[0] if doc else ""
    if path.endswith("[]"):
        prefix = f"Each item of the list ``{path[:-2]}``."
        text = f"{prefix} {text}" if text else prefix
    return rst_escape(" ".join(text.split())) if text else ""


def config_reference(model=None, template=None):
    """reStructuredText of every key of the config model, one table per section.

    Parameters
    ----------
    model : type, optional
        A pydantic model; default `ringbg.config.Config`.
    template : str, optional
        An annotated YAML template whose comments describe keys without a description in the
        model; default `ringbg.config.TEMPLATE` (only when ``model`` is the default).

    Returns
    -------
    text : str
    """
    if model is None:
        from ringbg.config import TEMPLATE, Config

        model = Config
        template = TEMPLATE if template is None else template
    notes = template_comments(template or "")
    out = []
    for path, sub in _sections(model):
        title = f"``{path}``" if path else "Top level"
        out += [f".. _{_label(path)}:", "", title, "-" * max(len(title), 4), ""]
        intro = _section_intro(path, sub)
        if intro:
            out += [intro, ""]
        out += _table(path, sub, notes) + [""]
    return "\n".join(out)


def products_reference(products=None):
    """reStructuredText table of the map products (``maps.fits`` HDUs, `Result.maps` keys).

    Parameters
    ----------
    products : dict, optional
        Name -> `ringbg.products.Product`; default `ringbg.products.PRODUCTS`.

    Returns
    -------
    text : str
    """
    if products is None:
        from ringbg.products import PRODUCTS

        products = PRODUCTS
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 20 12 56 12", "",
             "   * - HDU / key", "     - Unit (BUNIT)", "     - Content",
             "     - Per energy band"]
    for name, product in products.items():
        lines += [f"   * - ``{name}``", f"     - ``{product.unit}``" if product.unit else
                  "     - (none)", f"     - {rst_escape(product.comment)}",
                  f"     - {'yes' if product.band else 'no'}"]
    return "\n".join(lines) + "\n"


def setup(app):
    """The Sphinx extension: the ``ringbg-config-reference`` directive."""
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles
    from docutils import nodes
    from docutils.statemachine import StringList

    def directive(module_name, make_text):
        class Generated(SphinxDirective):
            has_content = False

            def run(self):
                import importlib

                self.env.note_dependency(importlib.import_module(module_name).__file__)
                node = nodes.container()
                lines = StringList(make_text().splitlines(), f"<{module_name}>")
                nested_parse_with_titles(self.state, lines, node)
                return node.children

        return Generated

    app.add_directive("ringbg-config-reference", directive("ringbg.config", config_reference))
    app.add_directive("ringbg-products", directive("ringbg.products", products_reference))
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
