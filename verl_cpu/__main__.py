"""Shell access to the CPU run settings, for scripts:

eval "$(python -m verl_cpu env)"                       # export NOISYGRPO_CPU_BACKEND=1 ...
mapfile -t CPU_OVERRIDES < <(python -m verl_cpu overrides --num-cpus 32)
python -m verl.trainer.main_ppo "${CPU_OVERRIDES[@]}" my.key=value ...
"""

from __future__ import annotations

import argparse
import shlex

from verl_cpu.overrides import cpu_env, cpu_overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m verl_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["env", "overrides"], help="export lines, or Hydra overrides one per line")
    parser.add_argument("--num-cpus", type=int, default=32)
    parser.add_argument("--n-gpus", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.what == "env":
        for key, value in cpu_env().items():
            print(f"export {key}={shlex.quote(value)}")
    else:
        print("\n".join(cpu_overrides(num_cpus=args.num_cpus, n_gpus=args.n_gpus, num_workers=args.num_workers)))


if __name__ == "__main__":
    main()
