"""Deployments: engines run as jobs (service, states, lifecycle policies, the monitor)."""
