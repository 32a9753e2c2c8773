"""An online, dataset-aware popularity model of a file cache (prototype)."""

from __future__ import annotations

import math
from dataclasses import dataclass

DAY = 86400.0


@dataclass
class ModelConfig:
    half_life_days: float = 10.0
    alpha: float = 0.1
    beta_days: float = 1.0
    episode_gap_s: float = 6 * 3600.0
    admit_min: float = 0.0
    margin: float = 1.0
    mode: str = "decay"
    count: str = "episodes"
    cov: bool = True


class DatasetStats:
    __slots__ = ("first", "last", "tasks", "tasks_t", "reqs", "files", "episodes", "bytes")

    def __init__(self, t: float) -> None:
        self.first = t
        self.last = t
        self.tasks = 0.0  # decayed number of tasks, as of tasks_t
        self.tasks_t = t
        self.reqs = 0.0  # decayed requests, as of tasks_t
        self.files: dict[str, list] = {}  # path -> [size, count, last]
        self.episodes: list[list] = []  # [last time, set of paths]
        self.bytes = 0


class PopularityModel:
    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config or ModelConfig()
        self.datasets: dict[str, DatasetStats] = {}
        self._gamma = math.log(2) / (self.config.half_life_days * DAY)

    def observe(self, t: float, path: str, size: int, bytes_hit: int = 0, bytes_miss: int = 0) -> DatasetStats:
        d = path.rpartition("/")[0]
        st = self.datasets.get(d)
        if st is None:
            st = self.datasets[d] = DatasetStats(t)
        f = st.files.get(path)
        if f is None:
            f = st.files[path] = [size, 0, t]
            st.bytes += size
        f[1] += 1
        f[2] = t
        st.last = t
        # decay to now
        dec = math.exp(-self._gamma * (t - st.tasks_t)) if self.config.mode == "decay" else 1.0
        st.tasks *= dec
        st.reqs = st.reqs * dec + 1.0
        st.tasks_t = t
        if self.config.count == "max":
            if f[1] > st.tasks:
                st.tasks = float(f[1])
            return st
        if self.config.count == "mean":
            st.tasks = st.reqs / len(st.files)
            return st
        # episode assignment
        gap = self.config.episode_gap_s
        eps = st.episodes
        if eps and t - min(e[0] for e in eps) > gap:
            eps[:] = [e for e in eps if t - e[0] <= gap]
        for e in eps:
            if path not in e[1]:
                e[1].add(path)
                e[0] = t
                break
        else:
            eps.append([t, {path}])
            st.tasks += 1.0
        return st

    def dataset_value(self, st: DatasetStats, t: float) -> float:
        c = self.config
        g = self._gamma
        k = st.tasks * math.exp(-g * (t - st.tasks_t))
        r = st.reqs * math.exp(-g * (t - st.tasks_t))
        age = t - st.first
        if c.mode == "decay":
            exposure = (1.0 - math.exp(-g * age)) / g / DAY
        else:
            exposure = (math.exp(g * age) - 1.0) / g / DAY
        lam = (c.alpha + k) / (c.beta_days + exposure)
        cov = min(1.0, r / (k * len(st.files))) if (k > 0 and c.cov) else 1.0
        return lam * cov
