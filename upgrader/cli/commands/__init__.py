"""One module per command group; each ``cmd_*`` takes the parsed arguments and returns an exit code."""
