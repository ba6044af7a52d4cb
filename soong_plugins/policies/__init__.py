"""Built-in plugin ``policies``: idle timeout, lease, hard timeout and budget."""
