"""Who and what is trusted: SSH signatures, allowed signers, keys, approvals and the plan's requester,
packages and signed catalogs (serials), and the plan's package checked against the catalog at run time.
Imports nothing from ``upgrader.cli``, ``upgrader.customer`` or ``upgrader.fleet``."""
