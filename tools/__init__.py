"""The `candlewax` command and its sub-commands (one module each), with their pure cores."""
