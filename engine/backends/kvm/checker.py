"""The checker on a real VM: the model's, with one sentence worded for what userspace sees."""

from __future__ import annotations

from typing import cast

from engine.checker import Checker
from engine.events import Event, EventBus, Exit, IoctlEnter, IoctlExit
from engine.units import format_ns

IOCTL = "KVM_SET_USER_MEMORY_REGION"


class KvmChecker(Checker):
    """The model's checker and verdicts. One sentence differs: a real kernel shows userspace no
    memslot swap, so a fetch that failed during or after a DELETE is placed against the ioctl
    (when it entered, whether it had returned) instead of a swap time it cannot know."""

    def __init__(self, atomic: bool, bus: EventBus | None = None) -> None:
        super().__init__(atomic, bus)
        self._enter: IoctlEnter | None = None
        self._returned: IoctlExit | None = None

    def observe(self, ev: Event) -> None:
        kind = type(ev)
        if kind is IoctlEnter:
            self._enter = cast(IoctlEnter, ev)
            self._returned = None
        elif kind is IoctlExit and self._enter is not None:
            self._returned = cast(IoctlExit, ev)
        elif kind is Exit:
            self._real_exit(cast(Exit, ev))
        super().observe(ev)

    def _real_exit(self, ev: Exit) -> None:
        io = self._enter
        if (
            ev.reason != "KVM_EXIT_INTERNAL_ERROR"
            or self.crash
            or io is None
            or io.memory_size != 0
            or io.ioctl != IOCTL
        ):
            return
        done = self._returned
        when = (
            f"had not returned yet ({format_ns(ev.own_t - io.own_t)} after it entered the kernel)"
            if done is None
            else f"returned at t={format_ns(done.own_t)}, {format_ns(ev.own_t - done.own_t)} before KVM_RUN "
            "returned"
        )
        self.crash = (
            f"vcpu{ev.vcpu} fetched its next instruction at RIP {ev.rip:#x} while no memslot covered "
            f"that GPA: KVM could not emulate the fetch and KVM_RUN returned KVM_EXIT_INTERNAL_ERROR "
            f"(suberror {ev.suberror}, KVM_INTERNAL_ERROR_EMULATION). The window was opened by "
            f"KVM_SET_USER_MEMORY_REGION(slot {io.slot & 0xFFFF}, memory_size 0), a DELETE issued at "
            f"t={format_ns(io.own_t)} that {when}."
        )
