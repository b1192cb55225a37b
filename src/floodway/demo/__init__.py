"""Runnable demos. ``floodway demo`` (and ``make demo``) runs ``floodway.demo.basic``."""
