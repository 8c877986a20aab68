"""Metric series as plain Python numbers: `inc` is one attribute update, `observe` one bisect.

A cached socketmap answer has a budget of a few microseconds. prometheus-client's
`Counter.inc()` costs ~0.5 µs and `Histogram.observe()` ~1.1 µs (a lock each); these cost
~0.03 µs and ~0.15 µs and become prometheus-client metric families only when scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

PREFIX = "mta_sts_policyd_"


class FastCounter:
    """A monotonically increasing number; `inc` is one attribute update."""

    __slots__ = ("function", "value")

    def __init__(self) -> None:
        self.value: float = 0
        self.function: Callable[[], float] | None = None

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def set_function(self, function: Callable[[], float] | None) -> None:
        """Add `function()` (an owner's own counter) to the exported value at scrape time."""
        self.function = function

    def read(self) -> float:
        return self.value + (self.function() if self.function is not None else 0)


class FastGauge(FastCounter):
    """A gauge: set by its owner, or read from `function()` at scrape time (which then wins)."""

    __slots__ = ()

    def set(self, value: float) -> None:
        self.value = value

    def read(self) -> float:
        return self.function() if self.function is not None else self.value


class Scalar:
    """A label-less counter or gauge family."""

    def __init__(self, name: str, doc: str, source: FastCounter) -> None:
        self.name, self.doc, self.source = PREFIX + name, doc, source

    def family(self) -> Metric:
        if isinstance(self.source, FastGauge):
            return GaugeMetricFamily(self.name, self.doc, value=self.source.read())
        return CounterMetricFamily(self.name, self.doc, value=self.source.read())


class CounterVec:
    """A counter family with one label whose values are all declared up front."""

    def __init__(self, name: str, doc: str, label: str, values: Iterable[str]) -> None:
        self.name, self.doc, self.label = PREFIX + name, doc, label
        self.children = {str(v): FastCounter() for v in values}
        self.function: Callable[[], Mapping[str, float]] | None = None

    def labels(self, value: str) -> FastCounter:
        """The pre-bound child; an undeclared value is a programming error (ValueError)."""
        try:
            return self.children[value]
        except KeyError:
            raise ValueError(f"{self.name}: undeclared {self.label} {value!r}") from None

    def set_function(self, function: Callable[[], Mapping[str, float]] | None) -> None:
        """Add `function()[label]` per declared label at scrape time; other keys are ignored."""
        self.function = function

    def family(self) -> Metric:
        extra = self.function() if self.function is not None else {}
        family = CounterMetricFamily(self.name, self.doc, labels=[self.label])
        for value, child in self.children.items():
            family.add_metric([value], child.value + extra.get(value, 0))
        return family


HistogramSource = Callable[[], tuple[Sequence[int], float]]


class FastHistogram:
    """A histogram bucketed by hand: `observe` is one bisect and two updates."""

    __slots__ = ("bounds", "counts", "doc", "function", "name", "total")

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self.name, self.doc = PREFIX + name, doc
        self.bounds = tuple(bounds)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.counts = [0] * (len(self.bounds) + 1)  # the last slot: above the largest bound
        self.total = 0.0
        self.function: HistogramSource | None = None

    def observe(self, seconds: float) -> None:
        # bisect_left files a value equal to a bound under that bound (`le` is inclusive).
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def set_function(self, bounds: Sequence[float], function: HistogramSource | None) -> None:
        """Add an owner's (per-bucket counts, sum) at scrape time; its bounds must be ours."""
        if tuple(bounds) != self.bounds:
            raise ValueError(f"{self.name}: source bounds differ from {self.bounds}")
        self.function = function

    def family(self) -> Metric:
        counts, total = list(self.counts), self.total
        if self.function is not None:
            extra, extra_total = self.function()
            counts = [a + b for a, b in zip(counts, extra, strict=True)]
            total += extra_total
        buckets, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=total)
