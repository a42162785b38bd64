"""Settings of candlewax: one typed object read from `CANDLEWAX_*` variables."""

from config.durations import format_duration, parse_duration_ms
from config.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "format_duration", "load_settings", "parse_duration_ms"]
