"""A small, strict renderer for the subset of Helm templates our chart uses (no helm binary here).

Called by the chart tests (tests/istiod_lite/operator/test_chart.py) when `helm` is not on
PATH; with helm present they run `helm template` instead and compare. It renders
charts/ambient-py-operator the way `helm template` does for these constructs, and refuses
anything else with `UnsupportedTemplate` (so a template that grows beyond the subset fails the
tests instead of rendering wrongly):

* actions `{{ ... }}` with `{{-` / `-}}` whitespace trimming, and `{{/* comments */}}`;
* values: `.Values.a.b`, `.Release.Name`, `.Release.Namespace`, `.Chart.Name`,
  `.Chart.Version`, `.Chart.AppVersion`, string literals, integers;
* pipelines with `default X`, `quote`, `toYaml`, `nindent N`, `indent N`;
* `{{ if PIPELINE }} ... {{ else }} ... {{ end }}` (Go template truthiness);
* `crds/` files are emitted verbatim, before the templates, as Helm installs them.
Pure: files in, YAML documents out.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(-?)(\s*)(.*?)(\s*)(-?)\}\}", re.DOTALL)


class UnsupportedTemplate(Exception):
    """The template uses Helm syntax outside the supported subset."""


def render_chart(chart_dir: Path, *, release: str = "ambient-py", namespace: str = "ambient-py",
                 values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object `helm template` would emit (CRDs first), parsed."""
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    merged = _merge(yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}, values or {})
    ctx = {"Values": merged, "Release": {"Name": release, "Namespace": namespace},
           "Chart": {"Name": chart["name"], "Version": chart["version"],
                     "AppVersion": chart.get("appVersion", "")}}
    docs: list[dict[str, Any]] = []
    for crd in sorted((chart_dir / "crds").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(crd.read_text()) if d)
    for tpl in sorted((chart_dir / "templates").glob("*.yaml")):
        text = render_template(tpl.read_text(), ctx)
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def render_template(text: str, ctx: Mapping[str, Any]) -> str:
    tokens = _tokenize(text)
    tree, rest = _parse(tokens, 0, top=True)
    assert rest == len(tokens)
    return _execute(tree, ctx)


def _tokenize(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(text):
        chunk = text[pos:m.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if m.group(1) == "-":
            chunk = chunk.rstrip()
        out.append(("text", chunk))
        body = m.group(3)
        if not body.startswith("/*"):
            out.append(("action", body))
        trim_next = m.group(5) == "-"
        pos = m.end()
    tail = text[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(tokens: list[tuple[str, str]], i: int, *, top: bool) -> tuple[list[Any], int]:
    nodes: list[Any] = []
    while i < len(tokens):
        kind, body = tokens[i]
        if kind == "text":
            nodes.append(("text", body))
            i += 1
            continue
        word = body.split(None, 1)[0] if body else ""
        if word == "if":
            then, i = _parse(tokens, i + 1, top=False)
            other: list[Any] = []
            if tokens[i - 1][1] == "else":
                other, i = _parse(tokens, i, top=False)
            nodes.append(("if", body[2:].strip(), then, other))
            continue
        if word in ("end", "else"):
            if top:
                raise UnsupportedTemplate(f"unbalanced {{{{ {word} }}}}")
            return nodes, i + 1
        if word in ("range", "with", "define", "template", "include", "block", "tpl"):
            raise UnsupportedTemplate(f"{{{{ {body} }}}}: {word!r} is outside the subset")
        nodes.append(("expr", body))
        i += 1
    if not top:
        raise UnsupportedTemplate("missing {{ end }}")
    return nodes, i


def _execute(nodes: list[Any], ctx: Mapping[str, Any]) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            out.append(_to_text(_pipeline(node[1], ctx)))
        else:
            _, cond, then, other = node
            out.append(_execute(then if _truthy(_pipeline(cond, ctx)) else other, ctx))
    return "".join(out)


def _pipeline(expr: str, ctx: Mapping[str, Any]) -> Any:
    """`a | f x | g`: each stage is an operand or a call; the piped value is the last argument."""
    value: Any = None
    for n, stage in enumerate(s.strip() for s in expr.split("|")):
        parts = shlex.split(stage, posix=False)
        if n == 0 and len(parts) == 1 and not parts[0][0].isalpha():
            value = _operand(parts[0], ctx)
            continue
        args = [_operand(a, ctx) for a in parts[1:]]
        if n > 0:
            args.append(value)
        value = _call(parts[0], args, expr)
    return value


def _call(fn: str, args: list[Any], expr: str) -> Any:
    if fn == "default" and len(args) == 2:
        return args[1] if _truthy(args[1]) else args[0]
    if fn == "quote" and len(args) == 1:
        return '"' + _to_text(args[0]).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if fn == "toYaml" and len(args) == 1:
        return "" if args[0] is None else yaml.safe_dump(
            args[0], default_flow_style=False, sort_keys=True).rstrip("\n")
    if fn in ("nindent", "indent") and len(args) == 2 and isinstance(args[0], int):
        pad = " " * args[0]
        body = "\n".join(pad + line for line in _to_text(args[1]).split("\n"))
        return ("\n" + body) if fn == "nindent" else body
    raise UnsupportedTemplate(f"{{{{ {expr} }}}}: {fn!r} with {len(args)} argument(s) is "
                              f"outside the subset")


def _operand(token: str, ctx: Mapping[str, Any]) -> Any:
    if token.startswith('"') and token.endswith('"'):
        return token[1:-1]
    if re.fullmatch(r"-?[0-9]+", token):
        return int(token)
    if token.startswith("."):
        value: Any = ctx
        for part in token[1:].split("."):
            if not isinstance(value, Mapping):
                raise UnsupportedTemplate(f"{token}: cannot index {type(value).__name__}")
            value = value.get(part)
        return value
    if " " in token or not token:
        raise UnsupportedTemplate(f"{token!r}: nested calls are outside the subset")
    raise UnsupportedTemplate(f"{token!r}: functions without a pipeline are outside the subset")


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "") and value != {} and value != []


def _to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
