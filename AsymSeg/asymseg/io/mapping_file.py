"""One reader for the JSON and YAML configuration files of ``finetune`` and ``experiment``.

Configuration files are small, hand-written mappings, so the reader refuses what such a file never
needs and an attacker would use: files over :data:`MAX_CONFIG_BYTES`, and YAML aliases (``*name``,
the "billion laughs" expansion that turns a few hundred bytes into gigabytes). YAML is read with
``safe_load`` (no Python objects). Error lines quote at most :data:`MAX_QUOTE` characters of the
parser's message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asymseg import jsontext
from asymseg.errors import InputError

#: Largest configuration file read, in bytes.
MAX_CONFIG_BYTES = 1_000_000
#: Longest parser message quoted in an error line.
MAX_QUOTE = 200


def _quote(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_QUOTE else text[:MAX_QUOTE] + " ..."


def read_config_text(path: Path) -> str:
    """A configuration file's text (UTF-8).

    Raises:
        InputError: no such file, or it cannot be read or decoded (names the file).
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such config file") from err
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise InputError(f"{path}: cannot read the config file: {_quote(reason)}") from err


def parse_mapping(text: str, suffix: str, source: str) -> Any:
    """Parse a configuration file's text as YAML (``.yaml``/``.yml``) or JSON.

    Args:
        text: the file's text.
        suffix: the file's lower-case suffix.
        source: what error messages name (the file).

    Raises:
        InputError: too large, invalid, a YAML alias, or YAML support missing.
    """
    if len(text.encode("utf-8", errors="replace")) > MAX_CONFIG_BYTES:
        raise InputError(f"{source}: the config file is larger than {MAX_CONFIG_BYTES:,} bytes; configs are "
                         "small hand-written mappings")
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise InputError(f"{source}: YAML config files need PyYAML (pip install 'asymseg[yaml]')") from err
        try:
            for event in yaml.parse(text, Loader=yaml.SafeLoader):
                if isinstance(event, yaml.AliasEvent):
                    raise InputError(f"{source}: YAML aliases (*{_quote(event.anchor)}) are not supported in "
                                     "config files; write the values out")
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise InputError(f"{source}: invalid YAML: {_quote(err)}") from err
    try:
        return jsontext.loads(text)
    except ValueError as err:  # json.JSONDecodeError included
        raise InputError(f"{source}: invalid JSON: {_quote(err)}") from err
