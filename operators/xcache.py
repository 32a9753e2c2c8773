"""Operators of the smart XCache manager: ingest the access log, train the popularity model, apply it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator

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


class _XCacheBaseOperator(BaseOperator):
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
    """Store the accesses the cache's ``.cinfo`` files remember in the access log; return how many were new.

    Re-ingesting is idempotent (each access has a key). The access-log Asset is this task's outlet, so
    the model's training is scheduled on it.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [access_log_asset(kwargs.get("xrootd_conn_id", "xrootd_default"))])
        super().__init__(**kwargs)

    def execute(self, context: Context) -> dict[str, int]:
        from airflow_cloud_paas.hooks.xrootd import XRootDHook
        from airflow_cloud_paas.services.xcache.monitor import ingest_cinfo

        hook = XRootDHook(self.xrootd_conn_id)
        directory = hook.cache_directory
        if directory is None:
            from airflow_cloud_paas.services.xcache.monitor import MonitorError

            raise MonitorError(f"connection '{self.xrootd_conn_id}' has no cache_dir extra: the .cinfo files "
                               "cannot be read (or feed the access log from the pfc monitoring stream)")
        log = self._access_log()
        try:
            new = ingest_cinfo(log, directory.root, cache=self.xrootd_conn_id)
            total = log.count()
        finally:
            log.close()
        self.log.info("Access log of %s: %d new record(s), %d in all", self.xrootd_conn_id, new, total)
        return {"new": new, "total": total}


class CloudPaaSXCacheTrainModelOperator(_XCacheBaseOperator):
    """Retrain a cache's popularity model on its access log and save it (inlet: the log; outlet: the model).

    :param window_days: how far back the access log is read
    """

    template_fields: Sequence[str] = (*_XCacheBaseOperator.template_fields, "window_days")

    def __init__(self, *, window_days: float = 60.0, **kwargs: Any) -> None:
        conn_id = kwargs.get("xrootd_conn_id", "xrootd_default")
        kwargs.setdefault("inlets", [access_log_asset(conn_id)])
        kwargs.setdefault("outlets", [model_asset(conn_id)])
        super().__init__(**kwargs)
        self.window_days = window_days

    def execute(self, context: Context) -> dict[str, Any]:
        import time

        from airflow_cloud_paas.services.xcache.manager import ModelStore, train

        log = self._access_log()
        try:
            now = time.time()
            records = log.since(now - float(self.window_days) * 86400.0, cache=self.xrootd_conn_id)
            model = train(records, self.xrootd_conn_id, now=now)
            store = ModelStore(str(log.url.render_as_string(hide_password=False)))
            try:
                store.save(model)
            finally:
                store.close()
        finally:
            log.close()
        top = sorted(model.datasets.items(), key=lambda kv: -kv[1])[:5]
        self.log.info("Model of %s trained on %d access(es), %d dataset(s); most valuable: %s", self.xrootd_conn_id,
                      model.records, len(model.datasets), ", ".join(f"{d} ({v:.3g}/day)" for d, v in top) or "none")
        return {"records": model.records, "datasets": len(model.datasets), "files": len(model.files),
                "trained_at": model.trained_at}


class CloudPaaSXCacheApplyModelOperator(_XCacheBaseOperator):
    """Evict the least valuable cached files and prefetch the most valuable missing ones (inlet: the model).

    :param capacity: the cache's size (e.g. ``25t``, ``500g``, or bytes); default: its file system's size
    :param target_fraction: evict until the cache holds at most this share of its capacity
    :param prefetch_budget: read at most this much into the cache per run (e.g. ``50g``)
    """

    template_fields: Sequence[str] = (*_XCacheBaseOperator.template_fields, "capacity", "prefetch_budget")

    def __init__(self, *, capacity: str | int | None = None, target_fraction: float = 0.9,
                 prefetch_budget: str | int = "50g", **kwargs: Any) -> None:
        kwargs.setdefault("inlets", [model_asset(kwargs.get("xrootd_conn_id", "xrootd_default"))])
        super().__init__(**kwargs)
        self.capacity = capacity
        self.target_fraction = target_fraction
        self.prefetch_budget = prefetch_budget

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_cloud_paas.hooks.xrootd import XRootDHook
        from airflow_cloud_paas.services.xcache.config import parse_size
        from airflow_cloud_paas.services.xcache.manager import ModelStore, plan_for

        log = self._access_log()
        store = ModelStore(str(log.url.render_as_string(hide_password=False)))
        try:
            model = store.load(self.xrootd_conn_id)
        finally:
            store.close()
            log.close()
        hook = XRootDHook(self.xrootd_conn_id)
        capacity = (parse_size(self.capacity, field="capacity") if self.capacity not in (None, "")
                    else hook.disk_usage().total_bytes)
        plan = plan_for(model, hook.cached_files(), capacity, target_fraction=self.target_fraction,
                        prefetch_budget_bytes=parse_size(self.prefetch_budget, field="prefetch_budget"))
        evicted = [path for path in plan.evict if hook.evict(path)]
        prefetched = [path for path in plan.prefetch if hook.prefetch(path) is not None]
        for reason in plan.reasons:
            self.log.info("%s", reason)
        return {**plan.to_dict(), "evicted": evicted, "prefetched": prefetched}
