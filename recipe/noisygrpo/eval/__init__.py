"""Evaluation of NoisyGRPO checkpoints with lmms-eval 0.7.3, the paper's tables and training plots.

- ``evaluate_checkpoint``: merge a verl FSDP checkpoint (``global_step_N/actor``) with verl's
  model merger and run lmms-eval on the paper's benchmarks with the training prompt
  (wrapped by ``scripts/eval_checkpoint.sh``);
- ``tables``: lmms-eval results JSONs of several runs -> the paper's tables (Markdown, LaTeX, CSV);
- ``plots``: verl ``file``-logger JSONL / tensorboard events -> training-dynamics figures;
- ``lmms_tasks`` (the benchmarks as include-path lmms-eval tasks) and ``lmms_adapters`` (their
  prompt and answer functions).

See README.md in this folder for the lmms-eval facts these modules rely on.
"""
