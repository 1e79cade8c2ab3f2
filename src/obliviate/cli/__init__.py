"""The ``obliviate`` command line: the only place where the core and the modalities meet."""
