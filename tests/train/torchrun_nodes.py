"""Run by tests/train/test_torchrun_nodes.py as torchrun's script on each "node", or alone: the
paper's two updates of a tiny model on this process's share of one batch (`two_updates`),
then what they gave to OUT/world{W}-rank{R}.pt."""

import sys
import warnings

import torch
import torch.distributed as dist

from cg3d.train.distributed import init_distributed, world
from tests.train.helpers import two_updates


def main(out: str) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    init_distributed()  # the process group torchrun describes (gloo on a CPU), as `cg3d train`
    rank, size = world()
    result = two_updates(size, rank, f"{out}/run-{size}-{rank}")
    torch.save(result, f"{out}/world{size}-rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
