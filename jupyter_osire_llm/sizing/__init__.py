"""How big a model is and which GPUs hold it, from the model's own files, before any job runs.

``model_files`` reads what the folder says (config.json, safetensors headers or index, GGUF
metadata), ``architecture`` turns a config into parameter and KV-cache counts, ``model_size``
puts them together for one catalog model, ``fit`` compares a size with the site's GPU types.
Standard library only; nothing here knows of Slurm, the store or the server.
"""
