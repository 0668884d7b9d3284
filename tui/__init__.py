"""slotlab's Textual monitor: watch a session, inject faults, replay and compare.

The TUI imports the engine; the engine never imports the TUI (an import-linter contract).
"""
