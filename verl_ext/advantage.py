"""Bayesian (Kalman-style) advantage of NoisyGRPO. (being written)"""
