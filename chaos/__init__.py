"""floodway's chaos drain: ``make chaos`` / ``python chaos/run.py`` (see RELIABILITY.md)."""
