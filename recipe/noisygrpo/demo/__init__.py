"""Offline demo helpers: tiny random Qwen2.5-VL and Qwen3-VL checkpoints for tests and CPU smoke runs."""
