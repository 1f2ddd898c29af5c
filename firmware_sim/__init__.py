"""Simulated smart-classroom devices and lab PCs, thousands per process (docs/simulator.md)."""
