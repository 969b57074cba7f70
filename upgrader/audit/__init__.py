"""The audit trail: the hash-chained, signed log (``log``), its exported report (``report``), and the
redaction and obfuscation of what is written or shown. Imports nothing from ``upgrader.cli``,
``upgrader.customer`` or ``upgrader.fleet``."""
