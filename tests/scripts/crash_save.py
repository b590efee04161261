"""A save that kills itself (SIGKILL) at a chosen file-system step, for tests/test_io.py.

    python crash_save.py TARGET CONTENT [--kill-at N] [--record FILE]

Writes a small two-file save of kind "adapter" whose files hold CONTENT, through
`keras_adapterfusion.io.write_directory`. With `--record`, the names of the
steps are written to FILE, one per line, as they happen; with `--kill-at N` the
process kills itself with SIGKILL just before step N (counting from 0), so
nothing of Python's clean-up runs.
"""

import argparse
import os
import signal

from keras_adapterfusion.io import directories


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("content")
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--record", default=None)
    args = parser.parse_args()
    count = 0
    record = open(args.record, "w") if args.record else None

    def hook(name):
        nonlocal count
        if record:
            record.write(name + "\n")
            record.flush()
        if count == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        count += 1

    directories._step_hook = hook
    with directories.write_directory(args.target, "adapter") as tmp:
        for name in ("module.json", "weights.safetensors"):
            with open(os.path.join(tmp, name), "w") as f:
                f.write(args.content)
        os.makedirs(os.path.join(tmp, "nested"))
        with open(os.path.join(tmp, "nested", "part"), "w") as f:
            f.write(args.content)


if __name__ == "__main__":
    main()
