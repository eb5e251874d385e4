# Monkey-patching must happen before anything else is imported, the user's code above all:
# a module that grabbed the unpatched socket or threading would block every request.
from gevent import monkey

monkey.patch_all()

from devrun.worker.serve import main  # noqa: E402

raise SystemExit(main())
