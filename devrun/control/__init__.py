"""Other terminals <-> one runner: the control socket, its verbs, the state folder, the app logs."""
