"""User-facing errors: the CLI prints the message (no traceback) and exits 2."""


class CascadeError(Exception):
    """Bad input the user can fix: a policy, a prompt, a plugin, a model path, a store URL."""


class PolicyError(CascadeError):
    """A policy file that does not validate; the message names the field and the fix."""


class PluginError(CascadeError):
    """A plugin that fails to load, registers a duplicate name, or raises while building."""
