# `python -m devrun` put the current folder first on sys.path; the runner never imports user
# code, and a project's signal.py or socket.py must not replace the standard library's here.
import os
import sys

sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]

from devrun.cli import main  # noqa: E402

raise SystemExit(main())
