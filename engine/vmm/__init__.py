"""The userspace VMM: QEMU's memory listener, its update strategies and its exit handlers."""
