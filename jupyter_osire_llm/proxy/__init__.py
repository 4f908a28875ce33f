"""The data plane: routing OpenAI calls to ready replicas over pinned TLS, streaming.
Knows nothing of tornado or the server."""
