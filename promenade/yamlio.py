"""Deterministic YAML: what Promenade writes (sorted keys, block style, PEM as literal blocks)."""

from __future__ import annotations

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):
    """Stable YAML: sorted keys, block style, multi-line strings (PEM) as literals."""


def _represent_str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data, *, many: bool = False) -> str:
    """Serialise deterministically (sorted keys, literal blocks for multi-line strings)."""
    options = dict(Dumper=_Dumper, sort_keys=True, default_flow_style=False, allow_unicode=True,
                   width=1 << 16)
    if many:
        return yaml.dump_all(data, explicit_start=True, **options)
    return yaml.dump(data, **options)


def load_yaml(text: str):
    """One YAML document (libyaml's safe loader when available)."""
    return yaml.load(text, Loader=_Loader)
