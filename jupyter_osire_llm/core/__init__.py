"""The control-plane core shared by deployments and batches: catalog, limits, script
rendering, the state store, job folders, usage counts."""
