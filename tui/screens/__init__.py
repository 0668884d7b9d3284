"""The TUI's screens: the live monitor, replay, compare, and the small dialogs."""
