from devrun.cli import main

raise SystemExit(main())
