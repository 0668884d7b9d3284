"""User key remapping: binding id -> keys, from a TOML file or an environment variable.

Every Binding in the TUI has an id; Textual's keymap substitutes keys by id. Sources, later
ones winning:

    ~/.config/slotlab/keymap.toml     (or the file named by SLOTLAB_KEYMAP_FILE)
        [keymap]
        pause = "P"
        step = "n,period"
    SLOTLAB_KEYMAP="pause=P;step=n,period"

Keys are Textual key names (`textual keys` prints them); a comma separates alternatives.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path


class KeymapError(ValueError):
    pass


def default_keymap_file(env: Mapping[str, str]) -> Path:
    explicit = env.get("SLOTLAB_KEYMAP_FILE")
    if explicit:
        return Path(explicit)
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "slotlab" / "keymap.toml"


def parse_keymap_text(text: str) -> dict[str, str]:
    """`id=keys;id=keys` as the environment variable carries it."""
    keymap: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(";"))):
        binding_id, sep, keys = item.partition("=")
        if not sep or not binding_id.strip() or not keys.strip():
            raise KeymapError(f"SLOTLAB_KEYMAP: {item!r} is not id=keys")
        keymap[binding_id.strip()] = keys.strip()
    return keymap


def load_keymap_file(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise KeymapError(f"{path}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise KeymapError(f"{path}: {err}") from None
    table = data.get("keymap", data)
    if not isinstance(table, dict):
        raise KeymapError(f'{path}: [keymap] must be a table of id = "keys"')
    keymap: dict[str, str] = {}
    for binding_id, keys in table.items():
        if not isinstance(keys, str) or not keys.strip():
            raise KeymapError(f"{path}: {binding_id} must be a string of keys")
        keymap[str(binding_id)] = keys.strip()
    return keymap


def load_keymap(env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    keymap: dict[str, str] = {}
    path = default_keymap_file(env)
    if path.is_file():
        keymap.update(load_keymap_file(path))
    elif env.get("SLOTLAB_KEYMAP_FILE"):
        raise KeymapError(f"{path}: no such keymap file")
    text = env.get("SLOTLAB_KEYMAP", "")
    if text:
        keymap.update(parse_keymap_text(text))
    return keymap
