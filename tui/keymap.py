"""User key remapping: binding id -> keys, from a TOML file or an environment variable.

Every Binding in the TUI has an id; Textual's keymap substitutes keys by id. Sources, later
ones winning:

    ~/.config/slotlab/keymap.toml     (or the file named by SLOTLAB_KEYMAP_FILE)
        [keymap]
        pause = "P"
        step = "n,period"
    SLOTLAB_KEYMAP="pause=P;step=n,period"

Keys are Textual key names (`textual keys` prints them); a comma separates alternatives.
An id no binding has, or a key that would then mean two things on one screen (`pause=q`
would hide quit), is an error naming the source, not something silently accepted.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

from textual.binding import Binding, BindingType
from textual.keys import format_key

# Names Textual's format_key leaves as they are, but a reader knows by their glyph.
_READABLE = {"period": ".", "enter": "enter", "full_stop": "."}


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


Scopes = Mapping[str, Mapping[str, str]]
"""Where keys must not collide (a screen, with the app's bindings): binding id -> keys."""


def _keys(text: str) -> Iterable[str]:
    return filter(None, (k.strip() for k in text.split(",")))


def check_keymap(keymap: Mapping[str, str], scopes: Scopes, source: str) -> None:
    """Every id names a binding, and no key ends up bound twice on one screen."""
    known = {binding_id for bindings in scopes.values() for binding_id in bindings}
    for binding_id in keymap:
        if binding_id not in known:
            raise KeymapError(f"{source}: no binding has the id {binding_id!r} (`?` lists the ids)")
    for scope, bindings in scopes.items():
        owner: dict[str, str] = {}
        for binding_id, default in bindings.items():
            for key in _keys(keymap.get(binding_id, default)):
                other = owner.setdefault(key, binding_id)
                if other != binding_id and (binding_id in keymap or other in keymap):
                    raise KeymapError(
                        f"{source}: {key!r} would be both {other} and {binding_id} on the "
                        f"{scope} screen"
                    )


def load_keymap(
    env: Mapping[str, str] | None = None, scopes: Scopes | None = None
) -> dict[str, str]:
    """The file's keymap, then the environment's on top; each checked against scopes when
    they are given."""
    env = os.environ if env is None else env
    keymap: dict[str, str] = {}
    path = default_keymap_file(env)
    if path.is_file():
        keymap.update(load_keymap_file(path))
        if scopes is not None:
            check_keymap(keymap, scopes, str(path))
    elif env.get("SLOTLAB_KEYMAP_FILE"):
        raise KeymapError(f"{path}: no such keymap file")
    text = env.get("SLOTLAB_KEYMAP", "")
    if text:
        keymap.update(parse_keymap_text(text))
        if scopes is not None:
            check_keymap(keymap, scopes, "SLOTLAB_KEYMAP")
    return keymap


def key_name(key: str) -> str:
    """One key as a person reads it: `plus` is +, `question_mark` is ?, `ctrl+r` stays."""
    *modifiers, base = key.strip().split("+") if key.strip() != "+" else ["+"]
    base = _READABLE.get(base) or format_key(base)
    return "+".join([*modifiers, base])


def key_names(keys: str) -> str:
    """Alternatives as `+ or =`."""
    return " or ".join(key_name(k) for k in _keys(keys))


def bindings_of(sources: Iterable[type]) -> list[Binding]:
    """The Bindings with an id, along each class's MRO; the first definition of an id wins."""
    seen: set[str] = set()
    out: list[Binding] = []
    for cls in sources:
        for klass in cls.__mro__:
            entries: list[BindingType] = klass.__dict__.get("BINDINGS", [])
            for entry in entries:
                if not isinstance(entry, Binding) or entry.id is None or entry.id in seen:
                    continue
                seen.add(entry.id)
                out.append(entry)
    return out
