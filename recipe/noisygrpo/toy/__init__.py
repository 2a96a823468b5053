"""The paper's experiment in miniature: a toy task, a warm start, GRPO vs NoisyGRPO on a CPU (issue 14)."""
