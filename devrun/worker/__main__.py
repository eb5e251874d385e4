# `python -m` put the app's folder first on sys.path: take it off until gevent and devrun are
# loaded, or a user's signal.py or socket.py would replace the standard library's under them.
# serve.run() puts it back for the app's own imports.
import os
import sys

sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]

# Monkey-patching must happen before anything else is imported, the user's code above all:
# a module that grabbed the unpatched socket or threading would block every request.
from gevent import monkey  # noqa: E402

monkey.patch_all()

if sys.argv[1:] == ["--forkserver"]:
    from devrun.worker.forkserver import main
else:
    from devrun.worker.serve import main

raise SystemExit(main())
