"""`slotlab export`: a session log for the viewers people already use (Perfetto, Chrome's
trace viewer; the TUI's asciicast recording lives in tui/, since the engine never imports it)."""
