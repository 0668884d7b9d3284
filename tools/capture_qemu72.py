"""Capture the built-in real-VMM scenarios' traces with the machine's QEMU and /dev/kvm.

    python3 tools/capture_qemu72.py OUTDIR [pc-boot|q35-boot|hotplug ...]

Each capture runs QEMU under `timeout`, writes OUTDIR/NAME.qemu.log (QEMU's `log` trace
backend), OUTDIR/NAME.cmdline (the exact command), and for hotplug OUTDIR/NAME.qmp.jsonl (every
QMP message sent or received, stamped with gettimeofday). The QEMU process is always killed at
the end. Then `slotlab import qemu-trace` turns each log into engine/scenarios/qemu72-NAME.toml.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

TRACE = [
    "-msg", "timestamp=on",
    "-trace", "kvm_set_user_memory", "-trace", "kvm_vcpu_ioctl", "-trace", "kvm_run_exit",
]  # fmt: skip
BASE = ["-accel", "kvm", "-display", "none", "-monitor", "none", "-serial", "none", "-net", "none"]

HOTPLUG_MACHINE = [
    "-machine", "q35", "-smp", "4", "-m", "512,slots=4,maxmem=4G",
    "-device", "pcie-root-port,id=rp1,chassis=1,slot=1",
    "-object", "memory-backend-ram,id=vmem0,size=512M",
    "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=0",
]  # fmt: skip
CAPTURES: dict[str, tuple[int, list[str]]] = {
    "pc-boot": (45, ["-machine", "pc", "-smp", "4", "-m", "512", "-boot", "reboot-timeout=500"]),
    "q35-boot": (45, ["-machine", "q35", "-smp", "4", "-m", "512", "-boot", "reboot-timeout=500"]),
    "hotplug": (30, HOTPLUG_MACHINE),
}

# (seconds after start, QMP command): plug a DIMM, toggle dirty logging with a capped
# migration (it must not complete, or the VM stays stopped), plug a virtio-mem device, toggle again.
HOTPLUG_SCRIPT: list[tuple[float, dict[str, object]]] = [
    (0.0, {"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 20000}}),
    (4.0, {"execute": "object-add", "arguments": {"qom-type": "memory-backend-ram", "id": "hp1", "size": 128 << 20}}),
    (4.2, {"execute": "device_add", "arguments": {"driver": "pc-dimm", "id": "dimm1", "memdev": "hp1"}}),
    (6.0, {"execute": "migrate", "arguments": {"uri": "exec:cat > /dev/null"}}),
    (7.0, {"execute": "migrate_cancel"}),
    (9.0, {"execute": "object-add", "arguments": {"qom-type": "memory-backend-ram", "id": "vmem1", "size": 256 << 20}}),
    (9.2, {"execute": "device_add", "arguments": {"driver": "virtio-mem-pci", "id": "vm1", "memdev": "vmem1", "requested-size": 0, "bus": "rp1"}}),
    (11.0, {"execute": "migrate", "arguments": {"uri": "exec:cat > /dev/null"}}),
    (12.0, {"execute": "migrate_cancel"}),
    (14.0, {"execute": "query-status"}),
]  # fmt: skip


class Qmp:
    def __init__(self, path: Path, log: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        for _ in range(100):
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                time.sleep(0.1)
        self.file = self.sock.makefile("rwb")
        self.log = log.open("w")
        self.read("greeting")
        self.send({"execute": "qmp_capabilities"})

    def read(self, kind: str) -> dict[str, object]:
        while True:
            msg = json.loads(self.file.readline())
            self._record("event" if "event" in msg else kind, msg)
            if "event" not in msg:
                return msg  # type: ignore[no-any-return]

    def send(self, cmd: dict[str, object]) -> None:
        self._record("send", cmd)
        self.file.write(json.dumps(cmd).encode() + b"\n")
        self.file.flush()
        self.read("reply")

    def _record(self, kind: str, data: object) -> None:
        self.log.write(json.dumps({"t": time.time(), "kind": kind, "data": data}) + "\n")
        self.log.flush()


def capture(out: Path, name: str) -> None:
    seconds, machine = CAPTURES[name]
    log = out / f"{name}.qemu.log"
    sock = out / f"{name}.qmp.sock"
    cmd = [
        "timeout", str(seconds), "qemu-system-x86_64", *BASE, *TRACE, "-D", log.name,
        *(["-qmp", f"unix:{sock.name},server=on,wait=off"] if name == "hotplug" else []),
        *machine,
    ]  # fmt: skip
    (out / f"{name}.cmdline").write_text(shlex.join(cmd) + "\n")
    proc = subprocess.Popen(cmd, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if name == "hotplug":
            start = time.time()
            time.sleep(0.5)
            qmp = Qmp(sock, out / f"{name}.qmp.jsonl")
            for at, command in HOTPLUG_SCRIPT:
                time.sleep(max(0.0, start + at - time.time()))
                qmp.send(command)
        proc.wait(timeout=seconds + 5)
    finally:
        proc.kill()
        proc.wait()
        sock.unlink(missing_ok=True)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:] or list(CAPTURES):
        capture(out, name)
        print(f"{name}: {out / (name + '.qemu.log')}")


if __name__ == "__main__":
    main()
