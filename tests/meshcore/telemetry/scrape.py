"""A strict little parser for the text exposition, so tests assert on samples, not substrings."""

import re

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')

Key = tuple[str, frozenset[tuple[str, str]]]


def parse(text: str) -> tuple[dict[Key, str], dict[str, str]]:
    """(samples by (name, labels), TYPE by family); fails on any line that is not valid."""
    samples: dict[Key, str] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"duplicate TYPE for {name}"
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in samples, f"duplicate series {line!r}"
        samples[key] = m.group(3)
    return samples, types


def series(samples: dict[Key, str], name: str, **match: str) -> dict[frozenset, str]:
    """Samples of `name` whose labels include `match`."""
    return {
        labels: value for (n, labels), value in samples.items()
        if n == name and set(match.items()) <= set(labels)
    }
