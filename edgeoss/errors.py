"""The errors a user can cause (bad paths, bad checkpoints, bad arguments): the CLI prints their
message on one line, without a traceback. Every module's own error subclasses EdgeossError, so
this module imports nothing and any floor can raise one."""


class EdgeossError(ValueError):
    """Something wrong with what the user gave edgeoss; the message says what and what to do."""


USER_ERRORS = (EdgeossError, FileExistsError, FileNotFoundError, PermissionError, ValueError)
