"""User-facing errors: one line naming the problem and the fix; the CLI exits 2."""


class BenchError(Exception):
    """A problem with the user's input (config, data, checkpoint, resolution).

    The message is a single line that says what is wrong and how to fix it.
    The CLI prints it and exits with status 2.
    """

    exit_code = 2
