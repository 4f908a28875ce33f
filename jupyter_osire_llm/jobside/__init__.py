"""Payloads copied into job folders and run on compute nodes: standard library only."""
