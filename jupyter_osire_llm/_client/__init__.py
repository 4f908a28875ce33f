"""Kernel and shell side: the client of the REST API and /osire/v1, server discovery, batch
specs. Standard library plus ``openai`` (and ``yaml`` lazily); never imports the server."""
