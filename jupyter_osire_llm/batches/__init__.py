"""Batch inference: JSONL files of requests answered by one job each (service, files, states)."""
