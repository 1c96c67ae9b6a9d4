"""Run by tests/train/test_torchrun_output.py as torchrun's script: `cg3d train ARGS`, where
rank 1 alone meets a user error as its first epoch begins (as a shard only it reads would be
refused), while rank 0 goes on into the epoch's first step."""

import os
import sys

import cg3d.train.loop as loop
from cg3d.cli import main
from cg3d.errors import UsageError

CAUSE = "shard train-000001.tar is refused: not a tar file"
train_epoch = loop.train_epoch


def failing_epoch(trainer, batches, epoch: int, step: int, updates: int):
    if os.environ["RANK"] == "1":
        raise UsageError(CAUSE)
    return train_epoch(trainer, batches, epoch, step, updates)


if __name__ == "__main__":
    loop.train_epoch = failing_epoch
    sys.argv = ["cg3d", *sys.argv[1:]]
    main(whole_process=True)
