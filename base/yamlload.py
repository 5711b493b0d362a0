"""The YAML loaders of the project's files, in one place.

- :class:`Yaml12Loader`: YAML 1.2 scalars — ``08:00`` and ``0502`` stay text, ``no`` and ``on``
  are not booleans (registry files, which people type times and unit numbers into);
- :class:`StrictYaml12Loader`: the same, and a key given twice is an error instead of the
  last one winning (device profiles, integrations);
- :class:`StrictSafeLoader`: PyYAML's safe loader (YAML 1.1), a key given twice an error
  (rule files, whose meaning was fixed under 1.1).

All are safe loaders: no Python objects are constructed from a file.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


def _refuse_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


class Yaml12Loader(_BaseLoader):
    """YAML 1.2 scalars: ``08:00`` and ``0502`` stay text, ``no`` is not a boolean."""


Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    ("int", r"[-+]?(?:0|[1-9][0-9]*)", list("-+0123456789")),
    ("float", r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?", list("-+0123456789")),
):
    Yaml12Loader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), _first
    )


class StrictYaml12Loader(Yaml12Loader):
    """YAML 1.2 scalars, and a key given twice is an error, not the last."""


StrictYaml12Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _refuse_duplicate_keys
)


class StrictSafeLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last one."""


StrictSafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _refuse_duplicate_keys
)
