"""Replay of scientific workflow traces on the Results service."""
