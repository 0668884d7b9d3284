"""The /dev/kvm ABI the backend needs: ioctl numbers, struct layouts and one ioctl helper.

Numbers are the x86-64 encodings (dir << 30 | size << 16 | 0xAE << 8 | nr), verified on the
development host (include/uapi/linux/kvm.h and include/uapi/asm-generic/ioctl.h: _IOC()).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import Final

DEV_KVM: Final = "/dev/kvm"
KVM_API_VERSION: Final = 12

KVM_GET_API_VERSION: Final = 0xAE00
KVM_CREATE_VM: Final = 0xAE01
KVM_CHECK_EXTENSION: Final = 0xAE03
KVM_GET_VCPU_MMAP_SIZE: Final = 0xAE04
KVM_CREATE_VCPU: Final = 0xAE41
KVM_GET_DIRTY_LOG: Final = 0x4010AE42
KVM_SET_USER_MEMORY_REGION: Final = 0x4020AE46
KVM_RUN: Final = 0xAE80
KVM_GET_REGS: Final = 0x8090AE81
KVM_SET_REGS: Final = 0x4090AE82
KVM_GET_SREGS: Final = 0x8138AE83
KVM_SET_SREGS: Final = 0x4138AE84

# struct kvm_userspace_memory_region: slot, flags, guest_phys_addr, memory_size, userspace_addr.
MEMORY_REGION: Final = struct.Struct("<IIQQQ")
# struct kvm_dirty_log: slot, padding, pointer to the bitmap (one bit per page, u64 words).
DIRTY_LOG: Final = struct.Struct("<IIQ")
# struct kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags.
REGS: Final = struct.Struct("<18Q")
REGS_RAX, REGS_RCX, REGS_RIP, REGS_RFLAGS = 0, 2, 16, 17
# struct kvm_sregs is 312 bytes; it starts with cs ds es fs gs ss tr ldt, each a kvm_segment:
# base, limit, selector, type, present, dpl, db, s, l, g, avl, unusable, padding.
SREGS_SIZE: Final = 312
SEGMENT: Final = struct.Struct("<QIHBBBBBBBBBB")
SREGS_CR0: Final = 224

# struct kvm_run, the fields the backend reads or writes (offsets as in include/uapi/linux/kvm.h).
RUN_IMMEDIATE_EXIT: Final = 1
RUN_EXIT_REASON: Final = 8
RUN_IO: Final = struct.Struct("<BBHIQ")  # at 32: direction, size, port, count, data_offset
RUN_MMIO: Final = struct.Struct("<Q8sIB")  # at 32: phys_addr, data[8], len, is_write
RUN_MMIO_DATA: Final = 40
RUN_INTERNAL: Final = struct.Struct("<II")  # at 32: suberror, ndata
RUN_UNION: Final = 32
# After the 256-byte union: kvm_valid_regs, kvm_dirty_regs, then s.regs (struct kvm_sync_regs,
# which starts with a struct kvm_regs). With KVM_SYNC_X86_REGS in kvm_valid_regs, every return
# from KVM_RUN has filled s.regs.regs (arch/x86/kvm/x86.c: store_regs(), at the `out:` label
# of kvm_arch_vcpu_ioctl_run(), with the same __get_regs() that KVM_GET_REGS uses).
RUN_VALID_REGS: Final = 288
RUN_SYNC_REGS: Final = 304
KVM_CAP_SYNC_REGS: Final = 74
KVM_SYNC_X86_REGS: Final = 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.restype = ctypes.c_int


def kvm_ioctl(fd: int, request: int, arg: int | bytearray = 0) -> int:
    """ioctl(2) with an unsigned long request and either an integer or a struct argument.

    fcntl.ioctl is not used: it passes the integer argument as a signed C int (overflowing for
    addresses such as KVM_SET_TSS_ADDR's) and hands a copy of a bytes argument to the kernel.
    A bytearray is passed by address, so the kernel's writes land in it.
    """
    if isinstance(arg, bytearray):
        buf = (ctypes.c_char * len(arg)).from_buffer(arg)
        ret: int = _libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), buf)
    else:
        ret = _libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_ulong(arg))
    if ret < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return ret


def device_path() -> str:
    """/dev/kvm, unless SLOTLAB_KVM_DEVICE names another node (to try the backend's error
    paths, or a device at another path)."""
    return os.environ.get("SLOTLAB_KVM_DEVICE") or DEV_KVM


def open_dev_kvm(path: str | None = None) -> int:
    """Open /dev/kvm and check its API version; the fd is closed again if the check fails."""
    fd = os.open(path or device_path(), os.O_RDWR | os.O_CLOEXEC)
    try:
        version = kvm_ioctl(fd, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            raise OSError(errno.EPROTO, f"KVM_GET_API_VERSION is {version}, not {KVM_API_VERSION}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def kvm_usable(path: str | None = None) -> tuple[bool, str]:
    """Whether a VM can be created here, with a one-line reason and a fix when not."""
    path = path or device_path()
    try:
        fd = open_dev_kvm(path)
    except FileNotFoundError:
        return False, (
            f"{path} does not exist: load the kvm module (kvm_intel, kvm_amd) "
            "or use a machine with hardware virtualization"
        )
    except PermissionError:
        return False, (
            f"{path}: permission denied: run as root, or chmod it / add the user to the kvm group"
        )
    except OSError as err:
        return False, f"{path} is not usable: {err.strerror or err}"
    try:
        # Opening is not enough: another hypervisor holding VMX/SVM makes KVM_CREATE_VM fail.
        os.close(kvm_ioctl(fd, KVM_CREATE_VM, 0))
    except OSError as err:
        return False, (
            f"{path} opens but KVM_CREATE_VM fails ({err.strerror}): is another hypervisor "
            "holding the CPU's virtualization extensions?"
        )
    finally:
        os.close(fd)
    return True, f"{path} is usable (KVM API version {KVM_API_VERSION})"


def kvm_module() -> str:
    """Which KVM implementation the kernel runs (kvm_intel, kvm_amd, kvm_pvm), from sysfs."""
    names = ("kvm_intel", "kvm_amd", "kvm_pvm")
    found = [n for n in names if os.path.isdir(f"/sys/module/{n}")]
    return ",".join(found) or "unknown"
