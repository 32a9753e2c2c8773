"""Operators of the smart XCache manager: ingest the access log, train the popularity model, apply it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator

from airflow_cloud_paas.operators._defaults import CloudPaaSTaskDefaults

if TYPE_CHECKING:
    from airflow.sdk import Context


def access_log_asset(xrootd_conn_id: str) -> Asset:
    """Return the Asset of a cache's access log (lineage: which accesses fed which model).

    :param xrootd_conn_id: the cache's ``xrootd`` connection
    """
    return Asset(f"xcache://{xrootd_conn_id}/access-log", group="cloud-paas-xcache")


def model_asset(xrootd_conn_id: str) -> Asset:
    """Return the Asset of a cache's popularity model.

    :param xrootd_conn_id: the cache's ``xrootd`` connection
    """
    return Asset(f"xcache://{xrootd_conn_id}/popularity-model", group="cloud-paas-xcache")


class _XCacheBaseOperator(CloudPaaSTaskDefaults, BaseOperator):
    """The cache's connection and the access log's database (by default the deployment store's).

    :param xrootd_conn_id: the cache's ``xrootd`` connection (extra ``cache_dir`` where its disk is readable)
    :param access_log_url: a SQLAlchemy URL for the access log (default: the ``cloud_paas`` store's database)
    :param cloud_paas_conn_id: the deployment store connection (for the default URL)
    """

    template_fields: Sequence[str] = ("xrootd_conn_id", "access_log_url")

    def __init__(self, *, xrootd_conn_id: str = "xrootd_default", access_log_url: str | None = None,
                 cloud_paas_conn_id: str = "cloud_paas_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.xrootd_conn_id = xrootd_conn_id
        self.access_log_url = access_log_url
        self.cloud_paas_conn_id = cloud_paas_conn_id

    def _access_log(self) -> Any:
        from airflow_cloud_paas.services.xcache.monitor import AccessLog

        url = self.access_log_url
        if not url:
            from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

            store = CloudPaaSStoreHook(cloud_paas_conn_id=self.cloud_paas_conn_id)
            url = store.sqlalchemy_url.render_as_string(hide_password=False)
        return AccessLog(url)


class CloudPaaSXCacheIngestAccessLogOperator(_XCacheBaseOperator):
    """Store the cache's accesses in the access log; return how many were new.

    Two sources, each used when the connection names it: the accesses the cache's ``.cinfo`` files remember
    (extra ``cache_dir``), and the opens its admission library bypassed (extra ``bypass_log``; their sizes
    are asked of the origin, extra ``origin``). Re-ingesting is idempotent (each access has a key). The
    access-log Asset is this task's outlet, so the model's training is scheduled on it.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [access_log_asset(kwargs.get("xrootd_conn_id", "xrootd_default"))])
        super().__init__(**kwargs)

    def execute(self, context: Context) -> dict[str, int]:
        from airflow_cloud_paas.hooks.xrootd import XRootDHook, XRootDNotFoundError
        from airflow_cloud_paas.services.xcache.monitor import MonitorError, ingest_bypass_log, ingest_cinfo

        hook = XRootDHook(self.xrootd_conn_id)
        directory = hook.cache_directory
        bypass_log = hook.extras.get("bypass_log")
        if directory is None and not bypass_log:
            raise MonitorError(f"connection '{self.xrootd_conn_id}' has neither a cache_dir nor a bypass_log extra: "
                               "nothing to read accesses from (or feed the access log from the pfc monitoring stream)")

        def size_at_origin(path: str) -> int | None:
            try:
                return hook.stat(path, at_origin=True).size
            except XRootDNotFoundError:
                return None

        log = self._access_log()
        try:
            cinfo = ingest_cinfo(log, directory.root, cache=self.xrootd_conn_id) if directory is not None else 0
            bypassed = (ingest_bypass_log(log, bypass_log, size_at_origin, cache=self.xrootd_conn_id)
                        if bypass_log else 0)
            total = log.count()
        finally:
            log.close()
        self.log.info("Access log of %s: %d new record(s) from .cinfo files, %d bypassed open(s), %d in all",
                      self.xrootd_conn_id, cinfo, bypassed, total)
        return {"new": cinfo + bypassed, "cinfo": cinfo, "bypassed": bypassed, "total": total}


class _ModelOperator(_XCacheBaseOperator):
    """The popularity model's store and settings.

    :param capacity: the cache's size (e.g. ``25t``, ``500g``, or bytes); default: its file system's size
    :param model_settings: :class:`~airflow_cloud_paas.services.xcache.model.ModelConfig` fields to use
        instead of the saved model's (or the defaults), e.g. ``{"half_life_days": 10}``
    """

    template_fields: Sequence[str] = (*_XCacheBaseOperator.template_fields, "capacity", "model_settings")

    def __init__(self, *, capacity: str | int | None = None, model_settings: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.capacity = capacity
        self.model_settings = model_settings

    def _capacity(self, hook: Any) -> int:
        from airflow_cloud_paas.services.xcache.config import parse_size

        if self.capacity not in (None, ""):
            return parse_size(self.capacity, field="capacity")
        return hook.disk_usage().total_bytes

    @staticmethod
    def _store(log: Any) -> Any:
        from airflow_cloud_paas.services.xcache.manager import ModelStore

        return ModelStore(str(log.url.render_as_string(hide_password=False)))


class CloudPaaSXCacheTrainModelOperator(_ModelOperator):
    """Teach the cache's popularity model the accesses logged since its last run, and save it.

    The model learns online: each run feeds only the records stored since the previous one (a first run
    reads ``window_days`` back). Inlet: the access log; outlet: the model.

    :param window_days: how far back a new model's first run reads
    """

    template_fields: Sequence[str] = (*_ModelOperator.template_fields, "window_days")

    def __init__(self, *, window_days: float = 60.0, **kwargs: Any) -> None:
        conn_id = kwargs.get("xrootd_conn_id", "xrootd_default")
        kwargs.setdefault("inlets", [access_log_asset(conn_id)])
        kwargs.setdefault("outlets", [model_asset(conn_id)])
        super().__init__(**kwargs)
        self.window_days = window_days

    def execute(self, context: Context) -> dict[str, Any]:
        import time

        from airflow_cloud_paas.hooks.xrootd import XRootDHook
        from airflow_cloud_paas.services.xcache.manager import model_config, top_datasets, update_model

        config = model_config(self.model_settings)
        hook = XRootDHook(self.xrootd_conn_id)
        capacity = self._capacity(hook)
        log = self._access_log()
        try:
            store = self._store(log)
            try:
                saved = store.load_or_new(self.xrootd_conn_id, config)
                now = time.time()
                fed = update_model(saved, log, now=now, window_days=float(self.window_days), capacity_bytes=capacity)
                store.save(saved)
            finally:
                store.close()
        finally:
            log.close()
        model = saved.model
        top = top_datasets(model, now)
        self.log.info("Model of %s learned %d new access(es) (%d in all), knows %d dataset(s); most requested: %s",
                      self.xrootd_conn_id, fed, saved.records, len(model.datasets),
                      ", ".join(f"{d} ({v:.3g} tasks/day)" for d, v in top) or "none")
        return {"records": fed, "total_records": saved.records, "datasets": len(model.datasets),
                "last_id": saved.last_id, "trained_at": saved.trained_at,
                "write_threshold": model.write_threshold(now)}


class CloudPaaSXCacheApplyModelOperator(_ModelOperator):
    """Run the cache by its popularity model: evict, set what it admits, prefetch (inlet: the model).

    1. the least valuable cached files are evicted until the cache is under ``target_fraction`` of its capacity;
    2. when the connection names the admission library's policy file (extra ``admission_policy``), the
       datasets the model lets the cache write are admitted and the others bypassed;
    3. files that tasks in progress are about to read are prefetched, within ``prefetch_budget``, if worth more
       than what they displace; each is recorded so that its read is counted as a write, not an access.

    :param target_fraction: evict until the cache holds at most this share of its capacity
    :param prefetch_budget: read at most this much into the cache per run (e.g. ``50g``)
    :param admission: write the admission policy when the connection names one
    """

    template_fields: Sequence[str] = (*_ModelOperator.template_fields, "prefetch_budget")

    def __init__(self, *, target_fraction: float = 0.9, prefetch_budget: str | int = "50g", admission: bool = True,
                 **kwargs: Any) -> None:
        kwargs.setdefault("inlets", [model_asset(kwargs.get("xrootd_conn_id", "xrootd_default"))])
        super().__init__(**kwargs)
        self.target_fraction = target_fraction
        self.prefetch_budget = prefetch_budget
        self.admission = admission

    def execute(self, context: Context) -> dict[str, Any]:
        import time

        from airflow_cloud_paas.hooks.xrootd import XRootDHook
        from airflow_cloud_paas.services.xcache.admission import policy_from_model, summary
        from airflow_cloud_paas.services.xcache.config import parse_size
        from airflow_cloud_paas.services.xcache.manager import model_config, plan_cache

        hook = XRootDHook(self.xrootd_conn_id)
        capacity = self._capacity(hook)
        log = self._access_log()
        try:
            store = self._store(log)
            try:
                saved = store.load(self.xrootd_conn_id)
            finally:
                store.close()
            config = model_config(self.model_settings)
            if config is not None:
                saved.model.config = config
                saved.model._configure()
            model = saved.model
            model.capacity_bytes = capacity
            now = time.time()
            cached = {f.path: int(f.cached_bytes) for f in hook.cached_files()}
            plan = plan_cache(model, cached, capacity, now=now, target_fraction=float(self.target_fraction),
                              prefetch_budget_bytes=parse_size(self.prefetch_budget, field="prefetch_budget"))
            for reason in plan.reasons:
                self.log.info("%s", reason)
            evicted = [path for path in plan.evict if hook.evict(path)]
            admission = None
            policy_file = hook.extras.get("admission_policy")
            if self.admission and policy_file:
                kept = set(cached) - set(evicted)
                policy = policy_from_model(model, now, cached=kept)
                policy.write(policy_file)
                admission = dict(summary(policy))
                self.log.info("Admission policy %s: %d dataset(s) admitted, %d bypassed, default %s", policy_file,
                              admission["admitted_datasets"], admission["bypassed_datasets"], admission["default"])
            prefetched = []
            for path, size in plan.prefetch:
                started = time.time()
                if hook.prefetch(path) is not None or hook.cache_directory is None:
                    log.record_prefetch(path, started, time.time(), size, cache=self.xrootd_conn_id)
                    prefetched.append(path)
        finally:
            log.close()
        return {**plan.to_dict(), "evicted": evicted, "prefetched": prefetched, "admission": admission}
