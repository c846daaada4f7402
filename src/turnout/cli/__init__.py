"""The `turnout` command: serve, check, sim, demo."""
