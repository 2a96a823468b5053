"""Speed and memory benchmarks of NoisyGRPO's pieces against their baselines (not tests; see README.md).

Run from the repository root, e.g. ``python -m benchmarks.bench_noise --quick``.
"""
