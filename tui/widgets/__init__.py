"""The monitor's widgets; the big ones draw with the Line API (see rows.py)."""
