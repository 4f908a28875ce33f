"""Slurm backends: the command-line tools and pyslurm, with their shared parsing and rules."""
