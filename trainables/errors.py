"""The one base class of bad input: the CLIs print its message as one line and exit with code 2.

Kept free of heavy imports so that a CLI can catch it without loading torch or Ray."""


class BadInput(ValueError):
    pass
