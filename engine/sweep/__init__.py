"""Runs at scale: the pure run unit, sweeps on Dask, hunting and shrinking failures."""
