"""Gateway: the one front door for operators — API keys, roles, audit, and the console."""
