"""Pure types and errors of the gateway; imports nothing of ours and no I/O library."""
