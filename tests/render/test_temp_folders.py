"""The temp folders of the commands that own no folder, in the system's temp folder (/tmp): a
Blender worker's (`cg3d show`, `classify`) and the demo's. A SIGKILLed run's stayed there for
ever (issue t81d); the next one of its kind removes it, never a live run's nor another user's."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# What makes each folder, as the commands do, then waits with it until its input ends.
MAKERS = {
    "cg3d-render-": "from cg3d.render.supervisor import BlenderWorker; "
    "made = BlenderWorker({'role': 'points'}, 60.0); print(made.tmp.name, flush=True)",
    "cg3d-demo-": "from cg3d.files import LiveTempDir; "
    "made = LiveTempDir('cg3d-demo-'); print(made.name, flush=True)",
}


def start_maker(prefix: str, system: Path) -> tuple[subprocess.Popen, Path]:
    maker = subprocess.Popen(
        [sys.executable, "-c", MAKERS[prefix] + "; import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(system)},
    )
    return maker, Path(maker.stdout.readline().strip())


@pytest.mark.parametrize("prefix", MAKERS)
def test_a_killed_runs_temp_folder_goes_at_the_next_start_never_a_live_or_foreign_one(
    tmp_path, prefix
):
    system = tmp_path / "system"
    system.mkdir()
    killed, killed_folder = start_maker(prefix, system)
    live, live_folder = start_maker(prefix, system)
    try:
        killed.kill()
        killed.wait()
        assert killed_folder.parent == system and killed_folder.is_dir()  # what a SIGKILL left
        foreign = system / f"{prefix}foreign"  # another user's, its lock free
        foreign.mkdir()
        (foreign / "lock").write_bytes(b"")
        if os.geteuid() == 0:  # root (CI) can make it another user's
            os.chown(foreign, 4321, 4321)
        else:
            foreign.chmod(0o000)  # unreadable like another user's 0700 folder
        # this user's, its lock free here, made on another machine sharing this /tmp (a
        # cluster's TMPDIR on NFS mounted nolock or Lustre's localflock: its flock is not seen)
        elsewhere = system / f"{prefix}elsewhere"
        elsewhere.mkdir()
        (elsewhere / "lock").write_text("0f1e2d3c-other-boot node17\n")
        following, following_folder = start_maker(prefix, system)
        following.communicate("")  # ends as a run does: its own folder goes
        assert following.returncode == 0
        assert not following_folder.exists()
        assert not killed_folder.exists()  # removed by the run that followed
        assert live_folder.is_dir() and foreign.is_dir() and elsewhere.is_dir()
    finally:
        live.communicate("")
    assert not live_folder.exists()


def test_a_live_temp_dir_is_a_temporary_directory_that_says_it_lives(tmp_path):
    """`LiveTempDir` holds its lock while it lives: the sweep of the next passes it over."""
    from cg3d.files import LiveTempDir

    with LiveTempDir("cg3d-demo-", tmp_path) as name:
        LiveTempDir("cg3d-demo-", tmp_path).cleanup()  # a second one sweeps: this one stays
        assert Path(name).parent == tmp_path and sorted(os.listdir(name)) == ["lock"]
    assert os.listdir(tmp_path) == []
