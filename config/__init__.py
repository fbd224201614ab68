"""Configuration: environment -> one typed settings object (see settings.py)."""

from config.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
