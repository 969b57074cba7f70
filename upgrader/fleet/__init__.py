"""The hosts and how they are reached: inventories (upgrader's own, Ansible's) and the transports
(local, SSH) that carry requests to the host agent. Imports nothing from ``upgrader.cli`` or
``upgrader.customer``."""
