"""The session core: what every backend's run shares (see session.py and ports.py).

config.py   RunConfig, actor_rng
ports.py    the seams a backend implements: Clock, MemslotBackend, VcpuControl, GuestRam,
            Backend, and what passes through them (RunContext, Machine, VcpuTotals)
session.py  SessionCore: bus, injector, checker, log, header, verdict, summary, boot
driver.py   ScenarioDriver: the VMM thread's loop over the scenario, the fault script
"""
