"""The lease agent: a small daemon on every instance that stops it when it is idle,
its lease ends or its hard limit passes. Standard library (and pluggy) only."""
