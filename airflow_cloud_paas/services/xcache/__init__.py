"""XCache as a service: a cache-policy simulator and the popularity model that manages a live XCache.

Nothing is imported eagerly: use :mod:`.sim`, :mod:`.policies` and :mod:`.model` directly.
"""
