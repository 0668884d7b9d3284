"""The deterministic runtime: integer virtual time and a sequencer over trio tasks."""
