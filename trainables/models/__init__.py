"""One file per model family; importing this package registers them all."""

from trainables.models import dcgan  # noqa: F401
