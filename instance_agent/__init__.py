"""The lease agent (not built yet): by design a small daemon on every instance that will
stop it when it is idle, its lease ends or its hard limit passes. Standard library (and
pluggy) only."""
