"""The pieces NoisyGRPO adds to verl, each one registration in one of verl's registries."""
