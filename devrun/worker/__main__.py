# `python -m` put the app's folder first on sys.path: take it off until gevent and devrun are
# loaded, or a user's signal.py or socket.py would replace the standard library's under them.
# serve.main() puts it back for the app's own imports.
import os
import sys

sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]

# Monkey-patching must happen before anything else is imported, the user's code above all:
# a module that grabbed the unpatched socket or threading would block every request.
from gevent import monkey  # noqa: E402

monkey.patch_all()

from devrun.worker.serve import main  # noqa: E402

raise SystemExit(main())
