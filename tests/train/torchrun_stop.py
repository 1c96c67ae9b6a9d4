"""Run by tests/train/test_torchrun_resume.py as torchrun's script: `cg3d train ARGS`, stopped
as Ctrl-C stops it (a KeyboardInterrupt on every process) as epoch STOP_AT begins, that is
once the checkpoint of the epochs before it is written."""

import os
import sys

import cg3d.train.loop as loop
from cg3d.cli import main

STOP_AT = int(os.environ["STOP_AT"])
train_epoch = loop.train_epoch


def stopping_epoch(trainer, batches, epoch: int, step: int, updates: int):
    if epoch == STOP_AT:
        raise KeyboardInterrupt
    return train_epoch(trainer, batches, epoch, step, updates)


if __name__ == "__main__":
    loop.train_epoch = stopping_epoch
    sys.argv = ["cg3d", *sys.argv[1:]]
    main(whole_process=True)
