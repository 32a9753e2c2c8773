"""XCache as a service: its configuration, local driver and monitoring, and the smart cache manager's parts
(:mod:`.model`, the popularity model; :mod:`.trace`, :mod:`.policies` and :mod:`.sim`, the trace simulator).

Nothing is imported eagerly: import the submodule you need.
"""
