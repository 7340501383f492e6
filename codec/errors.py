"""The one exception type that reaches users: a one-line message naming the problem and the fix."""


class CodecError(Exception):
    """A problem with the user's input or environment, reported without a traceback by the CLI.

    The message should say what is wrong and what to do about it, on one line.
    """
