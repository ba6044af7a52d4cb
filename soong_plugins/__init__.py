"""The plugins that ship with soong. Each is registered exactly as a third-party
plugin would be (see ``soong_core.plugins.BUILTIN_PLUGINS``) and uses only public hooks."""
