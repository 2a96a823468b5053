"""Offline demo helpers: a tiny random Qwen2.5-VL checkpoint for tests and CPU smoke runs."""
