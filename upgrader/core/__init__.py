"""The core: plans, the planner, the engine and its journal, playbooks, the run gate and the recorder,
with the pieces every subsystem uses (errors and exit codes, clock, fault points, documents). Imports
nothing from ``upgrader.cli`` or ``upgrader.customer``."""
