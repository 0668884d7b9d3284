"""The KVM being modelled: synchronous state machines, no trio, no clock, no I/O."""
