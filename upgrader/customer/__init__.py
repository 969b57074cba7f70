"""The customer side: health inspection and its report, the diagnostics bundle and incident severity,
service windows, time-limited engineer access, and what a host can upgrade to. Imported only by
``upgrader.cli``."""
