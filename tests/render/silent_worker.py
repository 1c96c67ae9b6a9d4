"""A worker that exits 0 without its ready line, as another cg3d's worker did (t92b): it says
on stderr (`stderr`) or on stdout (`stdout`) what its settings name, then nothing; or
(`hang`) says nothing for a minute."""

import json
import sys
import time

if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    if settings["say_on"] == "hang":
        time.sleep(60)
    stream = sys.stdout if settings["say_on"] == "stdout" else sys.stderr
    print("hello from another cg3d", file=stream, flush=True)
