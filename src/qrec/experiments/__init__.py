"""Preset grids that reproduce the papers' tables, their runner, RESULTS.md and figures."""
