"""The built-in scenarios captured from a real VMM: QEMU 7.2 with SeaBIOS on this machine's
/dev/kvm (tools/capture_qemu72.py runs the captures). Each ships in engine/scenarios/captured/
as its raw trace (gzip), the exact command line, and for hotplug the QMP conversation; the
scenario beside it is this module's import of that trace, so regenerating it is one command:

    python -m engine.importers.builtin
"""

from __future__ import annotations

from pathlib import Path

from engine.importers import import_trace
from engine.scenarios.loader import builtin_dir

VMM = "QEMU 7.2.22 + SeaBIOS on /dev/kvm"
CAPTURED = ("qemu72-pc-boot", "qemu72-q35-boot", "qemu72-hotplug")


def captured_dir() -> Path:
    return builtin_dir() / "captured"


def trace_path(name: str) -> Path:
    return captured_dir() / f"{name}.qemu.log.gz"


def regenerate(name: str) -> str:
    """The scenario text for a captured built-in, from its shipped trace."""
    trace = trace_path(name)
    command = (captured_dir() / f"{name}.cmdline").read_text().strip()
    return import_trace(
        str(trace),
        name=name,
        command=command,
        vmm=VMM,
        cite=f"captured/{trace.name}",
    ).text


def main() -> None:
    for name in CAPTURED:
        (builtin_dir() / f"{name}.toml").write_text(regenerate(name))
        print(f"{name}.toml")


if __name__ == "__main__":
    main()
